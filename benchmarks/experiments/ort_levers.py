"""ONNX Runtime session levers, measured on exported runs: what helps, what does not.

For every exported run under RUNS_DIR (or the runs named), each variant below runs the same
inputs (the run's ``eval.npz``, from ``rnnforge export onnx``) as TensorFlow's ``tf.function``,
interleaved in rounds in one process so that machine noise hits both alike (``rnnforge bench``,
by contrast, times each engine in its own process); the figure is the median p50 over the
rounds, and the ratio ORT / TF.

Variants: the bench's default session (``ORT_ENABLE_ALL``, all cores), each graph optimisation
level, 1 intra-op thread, no spin-waiting, sequential vs parallel execution, IOBinding on CPU.

    .venv/bin/python benchmarks/experiments/ort_levers.py runs/demo [--batch-sizes 1,8,32,256] [--rounds 5]
        [--output /tmp/ort_levers.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rnnforge  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)


def session_variants():
    """name -> (SessionOptions tweak, use IOBinding)."""
    import onnxruntime as ort

    def level(value):
        return lambda o: setattr(o, "graph_optimization_level", value)

    return {
        "default (ENABLE_ALL)": (lambda o: None, False),
        "DISABLE_ALL": (level(ort.GraphOptimizationLevel.ORT_DISABLE_ALL), False),
        "ENABLE_BASIC": (level(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC), False),
        "ENABLE_EXTENDED": (level(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED), False),
        "1 intra-op thread": (lambda o: setattr(o, "intra_op_num_threads", 1), False),
        "no spinning": (lambda o: o.add_session_config_entry("session.intra_op.allow_spinning", "0"), False),
        "parallel execution": (lambda o: setattr(o, "execution_mode", ort.ExecutionMode.ORT_PARALLEL), False),
        "IOBinding (cpu)": (lambda o: None, True),
    }


def p50(call, runs: int) -> float:
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def measure_run(run_dir: Path, batch_sizes, rounds: int, runs: int) -> list[dict]:
    import onnxruntime as ort

    from rnnforge.core.run_dir import RunDir
    from rnnforge.export.engines import OrtEngine, ProviderSetup, tf_function
    from rnnforge.export.eval_set import load_eval_set
    from rnnforge.export.measure import tile_batch
    from rnnforge.models import TASKS, get_spec

    run = RunDir(run_dir)
    spec = get_spec(run.load_config(TASKS)["task"])
    x_all = load_eval_set(run.eval_set, spec.name).x
    tf_call = tf_function(run.load_model(), spec, None)
    sessions = {}
    for variant, (tweak, binding) in session_variants().items():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        tweak(options)
        session = ort.InferenceSession(str(run.onnx), options, providers=["CPUExecutionProvider"])
        setup = ProviderSetup("cpu", ["CPUExecutionProvider"], io_binding=binding)
        sessions[variant] = OrtEngine.from_session(session, setup)
    rows = []
    for batch in batch_sizes:
        x = tile_batch(x_all, batch)
        calls = {"tensorflow": lambda x=x: tf_call(x).numpy(), **{v: e.bind(x) for v, e in sessions.items()}}
        figures = {k: [] for k in calls}
        for _ in range(rounds):
            for key, call in calls.items():
                figures[key].append(p50(call, runs))
        tf_ms = float(np.median(figures.pop("tensorflow")))
        for variant, values in figures.items():
            ms = float(np.median(values))
            rows.append(
                {
                    "task": spec.name,
                    "batch_size": batch,
                    "variant": variant,
                    "ort_p50_ms": round(ms, 4),
                    "tf_p50_ms": round(tf_ms, 4),
                    "ratio": round(ms / tf_ms, 3),
                }
            )
            print(
                f"{spec.name:>8} batch {batch:>4} {variant:>22}: ORT {ms:8.3f} ms  TF {tf_ms:8.3f} ms  x{ms / tf_ms:.3f}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs, or one folder of run dirs")
    parser.add_argument("--batch-sizes", default="1,8,32,256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs-per-round", type=int, default=20)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    dirs = [
        p
        for r in args.runs
        for p in ([r] if (r / "config.json").is_file() else sorted(r.iterdir()))
        if (p / "model.onnx").is_file()
    ]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rows = [row for d in dirs for row in measure_run(d, batches, args.rounds, args.runs_per_round)]
    if args.output:
        from rnnforge.core.fileio import write_json

        write_json(args.output, rows)
    print(json.dumps({"rows": len(rows)}))


if __name__ == "__main__":
    main()
