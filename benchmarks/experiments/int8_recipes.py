"""Which int8 recipe pays, per exported run: ORT p50 and accuracy of each quantization choice.

For every exported run named (``rnnforge export onnx`` written ``model.onnx`` and ``eval.npz``),
each recipe below quantizes ``model.onnx`` with ``rnnforge.export.int8.quantize`` (calibrating the
static ops on the first ``--calibration`` stored examples: enough to compare recipes; the export
itself calibrates on training inputs), then the fp32 model and every recipe are timed in rounds,
interleaved in one process (no TensorFlow in it), at each batch size; the figure is the median p50
over the rounds (``--cpu-time``: one intra-op thread and its CPU time, which other processes on a
loaded machine do not move), beside each recipe's accuracy on the stored examples (top-1 agreement with
TensorFlow's stored outputs and accuracy for classifiers, mean MAE for the forecaster).

    .venv/bin/python benchmarks/experiments/int8_recipes.py runs/demo/sketch runs/demo/video [--batch-sizes 1,256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rnnforge  # noqa: E402,F401
from rnnforge.models.spec import Int8Spec  # noqa: E402

RNN = ("LSTM", "GRU")
DENSE = ("MatMul", "Gemm")
RECIPES = {
    "dynamic rnn+dense": Int8Spec(dynamic_ops=RNN + DENSE),
    "dynamic rnn": Int8Spec(dynamic_ops=RNN),
    "dynamic dense": Int8Spec(dynamic_ops=DENSE),
    "static conv": Int8Spec(static_ops=("Conv",), dynamic_ops=()),
    "static conv + dynamic rnn+dense": Int8Spec(static_ops=("Conv",), dynamic_ops=RNN + DENSE),
    "static conv+dense + dynamic rnn": Int8Spec(static_ops=("Conv",) + DENSE, dynamic_ops=RNN),
    "static conv+relu+pool + dynamic rnn+dense": Int8Spec(
        static_ops=("Conv", "Relu", "AveragePool"), dynamic_ops=RNN + DENSE
    ),
}


def p50(session, name: str, x: np.ndarray, seconds: float, clock=time.perf_counter) -> float:
    for _ in range(3):
        session.run(None, {name: x})
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        started = clock()
        session.run(None, {name: x})
        times.append(clock() - started)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batch-sizes", default="1,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed window per (recipe, batch, round)")
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one intra-op thread, timed by this thread's CPU time: the work itself, unmoved by other "
        "processes on a loaded machine (not a latency)",
    )
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort

    from rnnforge.export.eval_set import load_eval_set
    from rnnforge.export.int8 import quantize, quantized_ops, run_model
    from rnnforge.models import get_spec

    batches = [int(b) for b in args.batch_sizes.split(",")]
    out = {}
    for run in args.runs:
        model = onnx.load(str(run / "model.onnx"))
        task = {p.key: p.value for p in model.metadata_props}["rnnforge.task"]
        spec, eval_set = get_spec(task), load_eval_set(run / "eval.npz", task)
        x, y, name = eval_set.x, eval_set.y, model.graph.input[0].name
        models = {"fp32": model}
        for recipe in args.recipes.split(","):
            if recipe in RECIPES:
                models[recipe] = quantize(model, RECIPES[recipe], x[: args.calibration])
        options = ort.SessionOptions()
        if args.cpu_time:
            options.intra_op_num_threads = 1
        clock = time.thread_time if args.cpu_time else time.perf_counter
        sessions = {
            k: ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
            for k, m in models.items()
        }
        figures = {k: {b: [] for b in batches} for k in models}
        for _ in range(args.rounds):
            for batch in batches:
                xb = np.ascontiguousarray(np.concatenate([x] * (-(-batch // len(x))))[:batch])
                for k, session in sessions.items():
                    figures[k][batch].append(p50(session, name, xb, args.seconds, clock))
        out[task] = {}
        for k, m in models.items():
            pred = run_model(m, x)
            scores = spec.score(x, y, pred, eval_set.info)
            row = {"p50_ms": {b: float(np.median(v)) for b, v in figures[k].items()}, "ops": quantized_ops(m)}
            if spec.kind == "classification":
                row["top1_agreement"] = float(np.mean(pred.argmax(-1) == eval_set.reference.argmax(-1)))
                row["accuracy"] = scores["accuracy"]
            else:
                row["mae"] = scores["mae"]
            out[task][k] = row
            base = out[task]["fp32"]["p50_ms"]
            timing = "  ".join(f"b{b} {ms:.3f} ms (x{ms / base[b]:.2f})" for b, ms in row["p50_ms"].items())
            quality = {key: round(v, 4) for key, v in row.items() if key in ("top1_agreement", "accuracy", "mae")}
            print(f"{task:>8} {k:>42}: {timing}  {quality}", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
