"""Two-phase distillation, probed in one process (issue #31; not a CLI option yet).

Trains the default 5 averaged members on CTA rail (the benchmark's code path of
``forecast_defaults.py``: ``cluster.fit`` on the arrays, global batch 32, one thread, the
workers' optimizer, loss and early stopping), then one fresh network of the single network's architecture on their
finished, averaged sequence-to-sequence forecasts: ``soft`` on those alone, ``mix`` on the true
targets and those side by side (its output twice, MAE against both), each with its own early
stopping. Scores the teacher and both students on the Jan-May 2019 validation windows; one JSON
line per seed appended to ``--output``. docs/forecasting.md ("One network's serving cost") has the
rows; ``--distil`` (online: the student trains beside the members) is what the CLI offers.

    nice -n 5 .venv/bin/python benchmarks/experiments/forecast_two_phase.py 42 --output benchmarks/experiments/forecast_two_phase.jsonl
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
from tensorflow import keras  # noqa: E402

import rnnforge  # noqa: E402,F401
from rnnforge.cluster.fit import fit, prepare  # noqa: E402
from rnnforge.models import get_spec  # noqa: E402
from rnnforge.models.resolve import resolve_config  # noqa: E402

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 42
output = sys.argv[sys.argv.index("--output") + 1] if "--output" in sys.argv else "forecast_two_phase.jsonl"
spec = get_spec("forecast")
data_dir = str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared/data/cta_ridership")
base = {"dataset": "cta_ridership", "data_dir": os.environ.get("CTA_DIR", data_dir), "seed": seed}
base.update(workers=1, batch_size=32)  # one process trains the CLI's global batch
c5 = resolve_config("forecast", {**base, "ensemble": 5, "distil": False})
d5 = spec.load_data(c5)
(xt, yt), (xv, yv) = d5.splits["train"], d5.splits["valid"]
teacher_run = prepare(c5, data=d5)
ens = teacher_run.model
t0 = time.perf_counter()
fit(
    teacher_run,
    (xt, spec.targets_for_training(xt, yt, d5.info)),
    (xv, spec.targets_for_training(xv, yv, d5.info)),
)
t_ens = time.perf_counter() - t0
teacher = spec.score(xv, yv, spec.to_serving(ens, c5, d5.info).predict(xv, verbose=0), d5.info)["mae_vs_naive"]
soft_t = ens.predict(xt, verbose=0).reshape(len(yt), 56, 5, 7).mean(axis=2)
soft_v = ens.predict(xv, verbose=0).reshape(len(yv), 56, 5, 7).mean(axis=2)
c1 = resolve_config("forecast", {**base, "ensemble": 1, "seed": seed + 1000})
d1 = dataclasses.replace(d5, info={**d5.info, "ensemble": 1, "distil": False})
out = {"seed": seed, "teacher": round(teacher, 4), "ens_seconds": round(t_ens)}
for mode in ("soft", "mix"):
    run = prepare(c1, data=d1)  # the single network, compiled as a Ray worker compiles it
    student = run.model
    true_t, true_v = spec.targets_for_training(xt, yt, d1.info), spec.targets_for_training(xv, yv, d1.info)
    if mode == "mix":  # its output twice, MAE against the true targets and the teacher's
        wrapped = keras.Model(student.inputs, keras.layers.Concatenate()([student.output, student.output]))
        wrapped.compile(
            optimizer=student.optimizer.__class__.from_config(student.optimizer.get_config()), loss=student.loss
        )
        run = dataclasses.replace(run, model=wrapped)
        tt, tv = np.concatenate([true_t, soft_t], -1), np.concatenate([true_v, soft_v], -1)
    else:
        tt, tv = soft_t, true_v
    t0 = time.perf_counter()
    h = fit(run, (xt, tt), (xv, tv))
    served = spec.to_serving(student, c1, d1.info)
    out[mode] = round(spec.score(xv, yv, served.predict(xv, verbose=0), d1.info)["mae_vs_naive"], 4)
    out[mode + "_epochs"] = len(h.history["loss"])
    out[mode + "_seconds"] = round(time.perf_counter() - t0)
    print(json.dumps(out), flush=True)
out["load"] = os.getloadavg()[0]
with open(output, "a") as handle:
    handle.write(json.dumps(out) + "\n")
print(json.dumps(out))
