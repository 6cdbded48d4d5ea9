"""``rnnforge bench RUN_DIR``: ONNX Runtime beside TensorFlow, same inputs, same process.

For each batch size: warm-up runs, then timed runs (``--runs``, cut at ``--max-seconds``) of
``session.run`` and of a ``tf.function`` with a fixed input signature (not ``model.predict``);
min/mean/p50/p90/p95/p99/max latency and throughput. Also session creation and first-inference
time, and both engines' scores on the whole test split with their agreement rate. A requested
GPU provider that the session does not really use is an error, never a CPU figure.
Writes ``bench/bench.json``, ``bench/report.md`` and plots.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from rnnforge import fileio, plots
from rnnforge.errors import ProviderError, UserError
from rnnforge.machine import machine_info, versions
from rnnforge.run_dir import RunDir

#: ``--provider`` -> ONNX Runtime providers to ask for, most preferred first.
PROVIDER_CHAIN = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
SCHEMA_VERSION = 1
MIN_RUNS = 10
SCORE_BATCH = 256


def run_bench(run_dir: Path, provider: str = "cpu", batch_sizes=(1, 32, 256), warmup: int = 10, runs: int = 100,
              max_seconds: float = 5.0, threads: int | None = None, model_path: Path | None = None) -> dict:
    """Benchmark the run's ONNX model; write bench.json, report.md and plots; return the result."""
    from models import get_spec

    run = RunDir(Path(run_dir))
    config = run.load_config()
    spec = get_spec(config["task"])
    model_path = Path(model_path) if model_path else run.onnx
    check_onnx_file(model_path, spec.name)

    session, creation_s = open_session(model_path, provider, threads)
    data = spec.load_data(config)
    split = data.evaluation_split()
    x_test, y_test = data.splits[split]
    input_name = spec.onnx.inputs[0].name
    first_s = _timed(lambda: session.run(None, {input_name: x_test[:1]}))

    tf_model = run.load_model()
    tf_call = tf_function(tf_model, spec, threads)
    engines = {
        "onnxruntime": lambda x: session.run(None, {input_name: x})[0],
        "tensorflow": lambda x: tf_call(x).numpy(),
    }
    rows, samples = [], {}
    for batch_size in batch_sizes:
        x = _batch(x_test, batch_size)
        for engine, call in engines.items():
            latencies = time_calls(call, x, warmup, runs, max_seconds)
            rows.append({"engine": engine, "batch_size": batch_size, **latency_stats(latencies, batch_size)})
            if batch_size == batch_sizes[0]:
                samples[engine] = latencies
            print(f"{engine:>12} batch {batch_size:>4}: p50 {rows[-1]['latency_ms']['p50']:.3f} ms  "
                  f"p99 {rows[-1]['latency_ms']['p99']:.3f} ms  {rows[-1]['throughput_per_s']:.0f} samples/s "
                  f"(n={len(latencies)})", flush=True)

    accuracy = score_engines(engines, spec, x_test, y_test, data.info, split)
    out = run.bench
    result = {
        "schema_version": SCHEMA_VERSION,
        "task": spec.name,
        "run_dir": str(run.path.resolve()),
        "onnx_model": str(model_path.resolve()),
        "provider": {"requested": provider, "session_providers": session.get_providers(),
                     "intra_op_threads": threads or os.cpu_count()},
        "machine": machine_info(),
        "versions": versions(),
        "settings": {"batch_sizes": list(batch_sizes), "warmup": warmup, "runs": runs, "max_seconds": max_seconds},
        "session_creation_ms": creation_s * 1e3,
        "first_inference_ms": first_s * 1e3,
        "latency": rows,
        "ratio_ort_over_tf": ratios(rows),
        "accuracy": accuracy,
        "parity": json.loads(run.parity.read_text()) if run.parity.is_file() else None,
    }
    plots.latency_vs_batch(rows, out / "latency_vs_batch.png")
    plots.latency_distribution(samples, out / "latency_distribution.png", batch_sizes[0])
    fileio.write_json(out / "bench.json", result)
    from export.report import bench_markdown

    fileio.write_text(out / "report.md", bench_markdown(result, run))
    result["report"] = str(out / "report.md")
    result["summary"] = summary_line(result)
    return result


def check_onnx_file(path: Path, task: str) -> None:
    """Full ``onnx.checker`` check, and the model must be an rnnforge export of ``task``."""
    import onnx

    if not path.is_file():
        raise UserError(f"{path} does not exist: run 'rnnforge export onnx RUN_DIR' first (or pass --model)")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a valid ONNX model: {message}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("rnnforge.task") != task:
        raise UserError(f"{path} was exported for task {meta.get('rnnforge.task')!r}, but the run is {task!r}")


def open_session(path: Path, provider: str, threads: int | None):
    """Create the ONNX Runtime session; refuse one that did not get the requested provider."""
    import onnxruntime as ort

    chain = PROVIDER_CHAIN[provider]
    available = ort.get_available_providers()
    if chain[0] not in available:
        raise ProviderError(f"--provider {provider}: {chain[0]} is not in this onnxruntime build "
                            f"(available: {', '.join(available)})")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), sess_options=options, providers=chain)
    creation = time.perf_counter() - started
    used = session.get_providers()
    if used[0] != chain[0]:
        raise ProviderError(f"--provider {provider}: ONNX Runtime fell back to {used[0]} (no usable "
                            f"{chain[0]}: no GPU or CUDA/cuDNN libraries); refusing to label those numbers "
                            f"as {provider}")
    return session, creation


def tf_function(model, spec, threads: int | None):
    """``model`` as a ``tf.function`` with the spec's fixed input signature."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process
            pass
    from export.onnx_export import input_signature

    return tf.function(lambda x: model(x, training=False), input_signature=input_signature(model, spec))


def time_calls(call, x: np.ndarray, warmup: int, runs: int, max_seconds: float) -> list[float]:
    """Latencies in ms of ``call(x)`` after ``warmup`` untimed calls; stops after ``max_seconds``
    once ``MIN_RUNS`` calls are timed."""
    for _ in range(warmup):
        call(x)
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(latencies) < runs:
        latencies.append(_timed(lambda: call(x)) * 1e3)
        if len(latencies) >= MIN_RUNS and time.perf_counter() > deadline:
            break
    return latencies


def latency_stats(latencies_ms: list[float], batch_size: int) -> dict:
    """min/mean/percentiles in ms and samples per second for one series of runs."""
    values = np.asarray(latencies_ms)
    percentiles = {f"p{p}": float(np.percentile(values, p)) for p in (50, 90, 95, 99)}
    return {
        "runs": int(len(values)),
        "latency_ms": {"min": float(values.min()), "mean": float(values.mean()), **percentiles, "max": float(values.max())},
        "throughput_per_s": float(batch_size / (values.mean() / 1e3)),
    }


def ratios(rows: list[dict]) -> dict:
    """ONNX Runtime / TensorFlow p50 latency per batch size (below 1: ONNX Runtime is faster)."""
    by_key = {(r["engine"], r["batch_size"]): r["latency_ms"]["p50"] for r in rows}
    return {str(b): by_key[("onnxruntime", b)] / by_key[("tensorflow", b)]
            for (engine, b) in by_key if engine == "onnxruntime" and ("tensorflow", b) in by_key}


def score_engines(engines: dict, spec, x: np.ndarray, y: np.ndarray, info: dict, split: str) -> dict:
    """Each engine's task scores on the whole split, and how closely the two agree."""
    predictions = {name: np.concatenate([call(x[i:i + SCORE_BATCH]) for i in range(0, len(x), SCORE_BATCH)])
                   for name, call in engines.items()}
    ort_pred, tf_pred = predictions["onnxruntime"], predictions["tensorflow"]
    agreement = {"max_abs_diff": float(np.max(np.abs(ort_pred.astype(np.float64) - tf_pred)))}
    if spec.kind == "classification":
        agreement["top1_agreement"] = float(np.mean(ort_pred.argmax(-1) == tf_pred.argmax(-1)))
    return {"split": split, "examples": int(len(x)), "agreement": agreement,
            **{name: spec.score(x, y, p, info) for name, p in predictions.items()}}


def summary_line(result: dict) -> str:
    """One line per batch size: ORT vs TF p50 and their ratio."""
    by_key = {(r["engine"], r["batch_size"]): r["latency_ms"]["p50"] for r in result["latency"]}
    parts = [f"batch {b}: ORT {by_key[('onnxruntime', int(b))]:.3f} ms vs TF {by_key[('tensorflow', int(b))]:.3f} ms "
             f"(x{ratio:.2f})" for b, ratio in result["ratio_ort_over_tf"].items()]
    return "\n".join(parts)


def _batch(x: np.ndarray, batch_size: int) -> np.ndarray:
    reps = -(-batch_size // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size]) if reps > 1 else np.ascontiguousarray(x[:batch_size])


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
