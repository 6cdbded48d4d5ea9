"""Which int8 recipe passes the video gate on evidence: each recipe's top-1 agreement with
TensorFlow on the held-out examples ``export onnx --int8`` judges it on, with its 95 % Wilson
lower bound, and its int8 / fp32 CPU time at batch 256 (one intra-op thread).

For each exported run named (``model.onnx`` written by ``rnnforge export onnx``), the script loads
the run's Keras model and dataset once, takes ``--examples`` held-out examples as the export does
(``export.int8.held_out_batches``: the test split, the validation split unless it calibrates,
then fresh draws of the synthetic set) and TensorFlow's outputs on them, then quantizes
``model.onnx`` with each recipe (``export.int8.quantize``, calibrated as the export calibrates:
``calibration_set``), and writes one JSON row per (run, recipe) to ``--out`` (appended):
agreement, bound, verdict against the gate, accuracy, the layers left in fp32, and the int8 /
fp32 thread CPU time at each batch size (median of ``--rounds`` interleaved rounds; CPU time is
what other processes on a loaded machine do not move).

    .venv/bin/python benchmarks/experiments/int8_video_gate.py runs/demo/video runs/hard/video \\
        --out benchmarks/experiments/int8_video_gate.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rnnforge  # noqa: E402,F401
from rnnforge.models.spec import Int8Spec  # noqa: E402

DYNAMIC = ("LSTM", "GRU", "MatMul", "Gemm")
STATIC = ("Conv", "Relu", "AveragePool")
RECIPES = {
    "static conv+relu+pool minmax (before)": Int8Spec(static_ops=STATIC, dynamic_ops=DYNAMIC),
    "+ first layer fp32": Int8Spec(static_ops=STATIC, dynamic_ops=DYNAMIC, fp32_layers=("first",)),
    "+ first and last layers fp32": Int8Spec(static_ops=STATIC, dynamic_ops=DYNAMIC, fp32_layers=("first", "last")),
    "percentile 99.999": Int8Spec(static_ops=STATIC, dynamic_ops=DYNAMIC, calibration="percentile"),
    "entropy": Int8Spec(static_ops=STATIC, dynamic_ops=DYNAMIC, calibration="entropy"),
    "minmax with 48 MiB of calibration clips": Int8Spec(
        static_ops=STATIC, dynamic_ops=DYNAMIC, calibration_bytes=48 * 2**20
    ),
    "first layer fp32 + percentile": Int8Spec(
        static_ops=STATIC, dynamic_ops=DYNAMIC, fp32_layers=("first",), calibration="percentile"
    ),
    "dynamic only": Int8Spec(dynamic_ops=DYNAMIC),
    "static conv+relu (pool fp32) + dynamic": Int8Spec(static_ops=("Conv", "Relu"), dynamic_ops=DYNAMIC),
    "static conv+relu (pool fp32), first layer fp32 + dynamic": Int8Spec(
        static_ops=("Conv", "Relu"), dynamic_ops=DYNAMIC, fp32_layers=("first",)
    ),
    "static only (LSTM and dense layers fp32)": Int8Spec(static_ops=STATIC, dynamic_ops=()),
    "static only, first layer fp32": Int8Spec(static_ops=STATIC, dynamic_ops=(), fp32_layers=("first",)),
    "static only, percentile": Int8Spec(static_ops=STATIC, dynamic_ops=(), calibration="percentile"),
    "static + dynamic LSTM (dense layers fp32)": Int8Spec(static_ops=STATIC, dynamic_ops=("LSTM", "GRU")),
    "static + dynamic, first layer and dense layers fp32": Int8Spec(
        static_ops=STATIC, dynamic_ops=("LSTM", "GRU"), fp32_layers=("first",)
    ),
}


def cpu_ms(session, name: str, x: np.ndarray, seconds: float) -> float:
    session.run(None, {name: x})
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        started = time.thread_time()
        session.run(None, {name: x})
        times.append(time.thread_time() - started)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--examples", type=int, default=None, help="held-out examples [default: --eval-examples']")
    parser.add_argument("--recipes", default=";".join(RECIPES), help="names separated by semicolons")
    parser.add_argument("--batch-sizes", default="1,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort

    from rnnforge.core.machine import versions
    from rnnforge.core.run_dir import RunDir
    from rnnforge.core.stats import rate_gate
    from rnnforge.export.int8 import calibration_set, fp32_nodes, held_out_batches, quantize, run_model, session
    from rnnforge.export.onnx_export import predict
    from rnnforge.export.settings import DEFAULT_EVAL_EXAMPLES
    from rnnforge.models import TASKS, get_spec

    target = args.examples or DEFAULT_EVAL_EXAMPLES
    batches = [int(b) for b in args.batch_sizes.split(",")]
    for run_path in args.runs:
        run = RunDir(run_path)
        config = run.load_config(TASKS)
        spec, model, data = get_spec(config["task"]), run.load_model(), None
        data = spec.load_data(config)
        fp32 = onnx.load(str(run.onnx))
        started = time.perf_counter()
        calibrated = calibration_set(data, Int8Spec(static_ops=("Conv",)))[1]["split"]
        parts = list(held_out_batches(data, calibrated, target))
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        sources = {s: sum(len(p[1]) for p in parts if p[2] == s) for s in dict.fromkeys(p[2] for p in parts)}
        reference = predict(model, x)
        print(
            f"{run_path}: {len(y):,} held-out examples {sources}, in {time.perf_counter() - started:.0f} s", flush=True
        )
        tf_accuracy = float(np.mean(reference.argmax(-1) == y))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        name = fp32.graph.input[0].name
        timed = {"fp32": ort.InferenceSession(fp32.SerializeToString(), options, providers=["CPUExecutionProvider"])}
        rows = {}
        for key in args.recipes.split(";"):
            recipe = RECIPES[key]
            started = time.perf_counter()
            calibration_x, calibration = calibration_set(data, recipe)
            quantized = quantize(fp32, recipe, calibration_x)
            seconds = time.perf_counter() - started
            pred = run_model(session(quantized), x)
            agreed = int(np.sum(pred.argmax(-1) == reference.argmax(-1)))
            gate = rate_gate(agreed, len(y), recipe.min_top1_agreement)
            rows[key] = {
                "run": str(run_path),
                "task": spec.name,
                "difficulty": config.get("difficulty"),
                "recipe": key,
                "spec": {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("max_mae_increase",)},
                "held_out": sources,
                "examples": len(y),
                "top1_agreed": agreed,
                "top1_agreement": gate["rate"],
                "top1_lower_bound": gate["lower_bound"],
                "verdict": gate["verdict"],
                "accuracy_int8": float(np.mean(pred.argmax(-1) == y)),
                "accuracy_tf": tf_accuracy,
                "fp32_layers": fp32_nodes(quantized),
                "calibration": calibration["note"],
                "quantize_s": round(seconds, 1),
            }
            print(f"  {key}: {gate['rate']:.4f} bound {gate['lower_bound']:.4f} {gate['verdict']}", flush=True)
            timed[key] = ort.InferenceSession(
                quantized.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        figures = {k: {b: [] for b in batches} for k in timed}
        for _ in range(args.rounds):
            for batch in batches:
                xb = np.ascontiguousarray(x[:batch])
                for k, s in timed.items():
                    figures[k][batch].append(cpu_ms(s, name, xb, args.seconds))
        load = os.getloadavg()
        with args.out.open("a") as out:
            for key, row in rows.items():
                row["cpu_ms"] = {str(b): float(np.median(figures[key][b])) for b in batches}
                row["cpu_ms_fp32"] = {str(b): float(np.median(figures["fp32"][b])) for b in batches}
                row["int8_over_fp32"] = {str(b): row["cpu_ms"][str(b)] / row["cpu_ms_fp32"][str(b)] for b in batches}
                row["loadavg_end"] = [round(v, 2) for v in load]
                row["cpus"] = os.cpu_count()
                row["versions"] = versions()
                out.write(json.dumps(row) + "\n")
                ratio = "  ".join(f"b{b} x{v:.2f}" for b, v in row["int8_over_fp32"].items())
                print(f"  {key}: int8/fp32 CPU time {ratio}", flush=True)


if __name__ == "__main__":
    main()
