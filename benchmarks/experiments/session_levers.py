"""Session creation and per-call levers of ONNX Runtime on exported runs, per variant.

Session creation: the model as exported (``ORT_ENABLE_ALL`` optimises it at every start) against
ORT's saved optimized model (``SessionOptions.optimized_model_filepath`` written once, then opened
with optimisations off) and the same in ORT format (``session.save_model_format=ORT``, a
``.ort`` file); median of ``--creations`` creations in this process. Per call: ORT p50 with
``session.intra_op.allow_spinning`` 1 (default) and 0, and with the second intra-op thread pinned
(``session.intra_op_thread_affinities``), interleaved in rounds at each batch size.

    .venv/bin/python benchmarks/experiments/session_levers.py runs/demo/sketch runs/demo/video [--variants fp32,int8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def options(level: str = "all", spinning: bool = True, affinity: str | None = None, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if affinity:
        opts.add_session_config_entry("session.intra_op_thread_affinities", affinity)
    return opts


def creation_ms(path: Path, opts_factory, n: int) -> float:
    import onnxruntime as ort

    times = []
    for _ in range(n):
        started = time.perf_counter()
        ort.InferenceSession(str(path), opts_factory(), providers=["CPUExecutionProvider"])
        times.append((time.perf_counter() - started) * 1e3)
    return float(np.median(times))


def p50_ms(session, name: str, x: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        session.run(None, {name: x})
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--variants", default="fp32,int8")
    parser.add_argument("--batch-sizes", default="1,32,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.7)
    parser.add_argument("--creations", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0, 1]
    pinned = str(cores[1] + 1) if len(cores) > 1 else None  # ORT counts logical processors from 1
    out = {}
    with tempfile.TemporaryDirectory() as work:
        for run in args.runs:
            with np.load(run / "eval.npz") as data:
                x = data["x"]
            for variant in args.variants.split(","):
                path = run / ("model.onnx" if variant == "fp32" else f"model.{variant}.onnx")
                if not path.is_file():
                    continue
                key = f"{run.name} {variant}"
                saved, saved_ort = (
                    Path(work) / f"{run.name}.{variant}.opt.onnx",
                    Path(work) / f"{run.name}.{variant}.ort",
                )
                first = options()
                first.optimized_model_filepath = str(saved)
                ort.InferenceSession(str(path), first, providers=["CPUExecutionProvider"])
                in_ort = options()
                in_ort.optimized_model_filepath = str(saved_ort)
                in_ort.add_session_config_entry("session.save_model_format", "ORT")
                ort.InferenceSession(str(path), in_ort, providers=["CPUExecutionProvider"])
                creation = {
                    "as exported (ENABLE_ALL)": creation_ms(path, options, args.creations),
                    "saved optimized .onnx": creation_ms(saved, lambda: options("off"), args.creations),
                    "saved optimized .ort": creation_ms(saved_ort, lambda: options("off"), args.creations),
                }
                sessions = {
                    "spinning (default)": ort.InferenceSession(
                        str(path), options(), providers=["CPUExecutionProvider"]
                    ),
                    "no spinning": ort.InferenceSession(
                        str(path), options(spinning=False), providers=["CPUExecutionProvider"]
                    ),
                }
                if pinned:
                    sessions["pinned thread"] = ort.InferenceSession(
                        str(path), options(affinity=pinned), providers=["CPUExecutionProvider"]
                    )
                name = sessions["spinning (default)"].get_inputs()[0].name
                batches = [int(b) for b in args.batch_sizes.split(",")]
                figures = {k: {b: [] for b in batches} for k in sessions}
                for _ in range(args.rounds):
                    for batch in batches:
                        xb = np.ascontiguousarray(np.concatenate([x] * (-(-batch // len(x))))[:batch])
                        for k, session in sessions.items():
                            figures[k][batch].append(p50_ms(session, name, xb, args.seconds))
                p50 = {k: {b: float(np.median(v)) for b, v in f.items()} for k, f in figures.items()}
                out[key] = {"session_creation_ms": creation, "p50_ms": p50}
                print(key, "creation ms:", {k: round(v, 1) for k, v in creation.items()}, flush=True)
                for k, row in p50.items():
                    print(f"  {k:>20}: " + "  ".join(f"b{b} {ms:.3f} ms" for b, ms in row.items()), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
