"""Two-phase distillation, probed in one process (issue #31; not a CLI option yet).

Trains the default 5 averaged members on CTA rail (the benchmark's code path of
``forecast_defaults.py``: plain Keras ``fit`` on the arrays, global batch 32, one thread, the
workers' early stopping), then one fresh network of the single network's architecture on their
finished, averaged sequence-to-sequence forecasts: ``soft`` on those alone, ``mix`` on the true
targets and those side by side (its output twice, MAE against both), each with its own early
stopping. Scores the teacher and both students on the Jan-May 2019 validation windows; one JSON
line per seed appended to ``--output``. docs/forecasting.md ("One network's serving cost") has the
rows; ``--distil`` (online: the student trains beside the members) is what the CLI offers.

    nice -n 5 .venv/bin/python benchmarks/forecast_two_phase.py 42 --output docs/forecast_two_phase.jsonl
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import rnnforge  # noqa
import numpy as np
from tensorflow import keras
from rnnforge.cluster.worker import early_stopping
from rnnforge.models import get_spec
from rnnforge.models.common import compile_model
from rnnforge.models.resolve import resolve_config

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 42
output = sys.argv[sys.argv.index("--output") + 1] if "--output" in sys.argv else "forecast_two_phase.jsonl"
spec = get_spec("forecast")
data_dir = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared/data/cta_ridership")
base = {"dataset": "cta_ridership", "data_dir": os.environ.get("CTA_DIR", data_dir), "seed": seed}
c5 = resolve_config("forecast", {**base, "ensemble": 5})
d5 = spec.load_data(c5)
(xt, yt), (xv, yv) = d5.splits["train"], d5.splits["valid"]
keras.utils.set_random_seed(seed)
ens = spec.build_model(c5, d5.info)
compile_model(ens, spec, c5, (len(yt) // 32) * c5.epochs)
t0 = time.perf_counter()
ens.fit(
    xt,
    spec.targets_for_training(xt, yt, d5.info),
    batch_size=32,
    shuffle=True,
    epochs=c5.epochs,
    validation_data=(xv, spec.targets_for_training(xv, yv, d5.info)),
    callbacks=[early_stopping(c5)],
    verbose=0,
)
t_ens = time.perf_counter() - t0
teacher = spec.score(xv, yv, spec.to_serving(ens, c5, d5.info).predict(xv, verbose=0), d5.info)["mae_vs_naive"]
soft_t = ens.predict(xt, verbose=0).reshape(len(yt), 56, 5, 7).mean(axis=2)
soft_v = ens.predict(xv, verbose=0).reshape(len(yv), 56, 5, 7).mean(axis=2)
c1 = resolve_config("forecast", {**base, "ensemble": 1})
info1 = {**d5.info, "ensemble": 1, "distil": False}
out = {"seed": seed, "teacher": round(teacher, 4), "ens_seconds": round(t_ens)}
for mode in ("soft", "mix"):
    keras.utils.set_random_seed(seed + 1000)
    student = spec.build_model(c1, info1)
    true_t, true_v = spec.targets_for_training(xt, yt, info1), spec.targets_for_training(xv, yv, info1)
    if mode == "mix":
        wrapped = keras.Model(student.inputs, keras.layers.Concatenate()([student.output, student.output]))
        tt, tv = np.concatenate([true_t, soft_t], -1), np.concatenate([true_v, soft_v], -1)
    else:
        wrapped, tt, tv = student, soft_t, true_v
    compile_model(wrapped, spec, c1, (len(yt) // 32) * c1.epochs)
    t0 = time.perf_counter()
    h = wrapped.fit(
        xt,
        tt,
        batch_size=32,
        shuffle=True,
        epochs=c1.epochs,
        validation_data=(xv, tv),
        callbacks=[early_stopping(c1)],
        verbose=0,
    )
    served = spec.to_serving(student, c1, info1)
    out[mode] = round(spec.score(xv, yv, served.predict(xv, verbose=0), info1)["mae_vs_naive"], 4)
    out[mode + "_epochs"] = len(h.history["loss"])
    out[mode + "_seconds"] = round(time.perf_counter() - t0)
    print(json.dumps(out), flush=True)
out["load"] = os.getloadavg()[0]
with open(output, "a") as handle:
    handle.write(json.dumps(out) + "\n")
print(json.dumps(out))
