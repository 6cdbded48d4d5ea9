"""``rnnforge bench RUN_DIR``: ONNX Runtime beside TensorFlow, same inputs, same process.

For each batch size (and, for models with a dynamic time axis, each ``--seq-lengths`` value):
warm-up runs, then timed runs (``--runs``, cut at ``--max-seconds``) of every engine - ONNX
Runtime for each variant (fp32 ``model.onnx``, fp16 ``model.fp16.onnx``) and a ``tf.function``
with a fixed input signature (not ``model.predict``). Reported as ``onnxruntime_perf_test`` and
``perf_analyzer`` users expect: min/mean/p50/p90/p95/p99/p99.9/max latency, throughput, session
creation and first-inference time, MLPerf-style SingleStream p90 and Offline samples/s; and
every engine's scores on the whole test split with their agreement and deltas against
TensorFlow. A requested GPU provider that the session does not really use is an error, never a
CPU figure. Writes ``bench/bench.json`` (validated against ``bench.schema.json``),
``bench/report.md``, ``bench/report.html`` and plots.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnforge.core import fileio, plots
from rnnforge.core.errors import ProviderError, UserError
from rnnforge.core.machine import machine_info, versions
from rnnforge.core.run_dir import RunDir

#: ``--provider`` -> ONNX Runtime providers to ask for, most preferred first.
PROVIDER_CHAIN = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
VARIANTS = ("fp32", "fp16")
SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).with_name("bench.schema.json")
MIN_RUNS = 10
SCORE_BATCH = 256
PERCENTILES = (50, 90, 95, 99, 99.9)


@dataclass
class ProviderSetup:
    """How ONNX Runtime sessions are created: providers, their options, IOBinding and device."""

    name: str  # cpu, cuda or tensorrt
    providers: list = field(default_factory=list)  # names or (name, options) tuples, for InferenceSession
    io_binding: bool = False
    device: str = "cpu"  # where IOBinding puts inputs and outputs
    cuda_graph: bool = False  # one session per input shape (a CUDA graph fixes the shapes)

    def options(self) -> dict:
        """Every provider's options, for the report."""
        return {p[0]: p[1] for p in self.providers if isinstance(p, tuple)}


def run_bench(
    run_dir: Path,
    provider: str = "cpu",
    batch_sizes=(1, 32, 256),
    warmup: int = 10,
    runs: int = 100,
    max_seconds: float = 5.0,
    threads: int | None = None,
    model_path: Path | None = None,
    variants=("fp32",),
    io_binding: bool | None = None,
    provider_options: dict | None = None,
    cuda_graph: bool = False,
    seq_lengths=None,
) -> dict:
    """Benchmark the run's ONNX model(s); write bench.json, report.md/html and plots; return the result."""
    from rnnforge.models import TASKS, get_spec

    run = RunDir(Path(run_dir))
    config = run.load_config(TASKS)
    spec = get_spec(config["task"])
    paths = variant_paths(run, model_path, variants)
    for path in paths.values():
        check_onnx_file(path, spec.name, config["info"])
    data = spec.load_data(config)
    split = data.evaluation_split()
    x_test, y_test = data.splits[split]
    seq_lengths = check_seq_lengths(spec, x_test, seq_lengths)

    engines, sessions_info = {}, {}
    for variant, path in paths.items():
        setup = provider_setup(
            provider,
            spec,
            path,
            x_test,
            batch_sizes,
            seq_lengths,
            run.bench,
            variant,
            provider_options or {},
            io_binding,
            cuda_graph,
        )
        engine = OrtEngine(path, setup, spec.onnx.inputs[0].name, threads)
        sessions_info[variant] = {
            "session_creation_ms": engine.creation_s * 1e3,
            "first_inference_ms": _timed(lambda engine=engine: engine.predict(x_test[:1])) * 1e3,
        }
        engines[engine_name(variant)] = engine
    engines["tensorflow"] = TfEngine(tf_function(run.load_model(), spec, threads))

    rows, samples = [], {}
    for seq_len in [None, *(seq_lengths or [])]:
        for batch_size in batch_sizes:
            x = tile_batch(x_test if seq_len is None else x_test[:, -seq_len:], batch_size)
            for name, engine in engines.items():
                latencies = time_calls(engine.bind(x), warmup, runs, max_seconds)
                rows.append(
                    {
                        "engine": name,
                        "batch_size": batch_size,
                        "seq_len": seq_len,
                        **latency_stats(latencies, batch_size),
                    }
                )
                if batch_size == batch_sizes[0] and seq_len is None:
                    samples[name] = latencies
                print(
                    f"{name:>16} batch {batch_size:>4}"
                    + (f" len {seq_len:>4}" if seq_len else "")
                    + f": p50 {rows[-1]['latency_ms']['p50']:.3f} ms  p99 {rows[-1]['latency_ms']['p99']:.3f} ms  "
                    f"{rows[-1]['throughput_per_s']:.0f} samples/s (n={len(latencies)})",
                    flush=True,
                )

    accuracy = score_engines({n: e.predict for n, e in engines.items()}, spec, x_test, y_test, data.info, split)
    first = next(iter(paths))
    parity = json.loads(run.parity.read_text()) if run.parity.is_file() else None
    result = {
        "schema_version": SCHEMA_VERSION,
        "task": spec.name,
        "run_dir": str(run.path.resolve()),
        "onnx_models": {v: str(p.resolve()) for v, p in paths.items()},
        "onnx_model": str(paths[first].resolve()),
        "provider": {
            "requested": provider,
            "session_providers": engines[engine_name(first)].providers(),
            "options": engines[engine_name(first)].setup.options(),
            "io_binding": engines[engine_name(first)].setup.io_binding,
            "cuda_graph": cuda_graph,
            "intra_op_threads": threads or os.cpu_count(),
        },
        "machine": machine_info(),
        "versions": {**versions(), "opset": (parity or {}).get("opset")},
        "settings": {
            "batch_sizes": list(batch_sizes),
            "seq_lengths": list(seq_lengths or []),
            "variants": list(paths),
            "warmup": warmup,
            "runs": runs,
            "max_seconds": max_seconds,
        },
        "sessions": sessions_info,
        "session_creation_ms": sessions_info[first]["session_creation_ms"],
        "first_inference_ms": sessions_info[first]["first_inference_ms"],
        "latency": rows,
        "ratios_over_tf": {name: ratios(rows, name) for name in engines if name != "tensorflow"},
        "ratio_ort_over_tf": ratios(rows, engine_name(first)),
        "scenarios": scenarios(rows),
        "accuracy": accuracy,
        "parity": parity,
    }
    validate_result(result)
    out = run.bench
    plots.latency_vs_batch([r for r in rows if r["seq_len"] is None], out / "latency_vs_batch.png")
    plots.latency_distribution(samples, out / "latency_distribution.png", batch_sizes[0])
    plots.throughput_vs_latency([r for r in rows if r["seq_len"] is None], out / "throughput_vs_latency.png")
    if seq_lengths:
        plots.latency_vs_seq_len([r for r in rows if r["seq_len"] is not None], out / "latency_vs_seq_len.png")
    from rnnforge.export.report import bench_markdown, write_report

    fileio.write_json(out / "bench.json", result)
    write_report(out / "report.md", bench_markdown(result, run), title=f"rnnforge report: {spec.name}")
    result["report"] = str(out / "report.md")
    result["summary"] = summary_line(result)
    return result


def run_bench_all(runs_dir: Path, **options) -> Path:
    """``run_bench`` every exported run under ``runs_dir``; one summary report; returns its path."""
    from rnnforge.export.report import summary_markdown, write_report

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"--all {runs_dir} is not a directory of run dirs")
    runs = sorted(p for p in runs_dir.iterdir() if (p / "config.json").is_file())
    if not runs:
        raise UserError(f"--all {runs_dir} holds no run dirs (folders with a config.json from 'rnnforge train')")
    not_exported = [r for r in runs if not (r / "model.onnx").is_file()]
    if not_exported:
        raise UserError(f"{not_exported[0]} has no model.onnx: run 'rnnforge export onnx {not_exported[0]}' first")
    results = {}
    for run in runs:
        print(f"==> bench {run}", flush=True)
        results[run.name] = run_bench(run, **options)
    fileio.write_json(
        runs_dir / "bench_all.json",
        {name: {k: v for k, v in r.items() if k != "summary"} for name, r in results.items()},
    )
    report = runs_dir / "bench_report.md"
    write_report(
        report,
        summary_markdown(
            runs_dir,
            results,
            "rnnforge benchmark report",
            f"{len(results)} runs under `{runs_dir}`, each benchmarked on ONNX Runtime "
            "beside TensorFlow; `bench_all.json` holds every figure.",
        ),
        "rnnforge benchmark report",
    )
    return report


def engine_name(variant: str) -> str:
    """``onnxruntime`` for fp32, ``onnxruntime_fp16`` for the fp16 variant."""
    return "onnxruntime" if variant == "fp32" else f"onnxruntime_{variant}"


def variant_paths(run: RunDir, model_path: Path | None, variants) -> dict[str, Path]:
    """The ONNX file of each requested variant (``--model`` replaces the fp32 one)."""
    from rnnforge.export.onnx_export import fp16_path

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserError(
            f"--variants: unknown variant {unknown[0] if unknown else '(none)'!r}; expected fp32 and/or fp16"
        )
    fp32 = Path(model_path) if model_path else run.onnx
    paths = {"fp32": fp32, "fp16": fp16_path(fp32)}
    if "fp16" in variants and not paths["fp16"].is_file():
        raise UserError(f"{paths['fp16']} does not exist: run 'rnnforge export onnx {run.path} --fp16' first")
    return {v: paths[v] for v in VARIANTS if v in variants}


def check_seq_lengths(spec, x: np.ndarray, seq_lengths) -> list[int] | None:
    """``--seq-lengths`` only for a dynamic time axis, each at most the data's length."""
    if not seq_lengths:
        return None
    axes = spec.onnx.inputs[0].axes
    if len(axes) < 2 or not isinstance(axes[1], str):
        raise UserError(
            f"--seq-lengths: task {spec.name!r} has a fixed input length ({x.shape[1]}); "
            "only models with a dynamic time axis (sketch) take a sweep"
        )
    too_long = [n for n in seq_lengths if n > x.shape[1]]
    if too_long:
        raise UserError(f"--seq-lengths: {too_long[0]} is longer than the data's {x.shape[1]} rows (--max-len)")
    return list(seq_lengths)


def check_onnx_file(path: Path, task: str, info: dict | None = None) -> None:
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
    if "rnnforge.task" not in meta:
        raise UserError(
            f"{path} is not an rnnforge export (no 'rnnforge.task' metadata): "
            "export the run with 'rnnforge export onnx RUN_DIR'"
        )
    if meta["rnnforge.task"] != task:
        raise UserError(f"{path} was exported for task {meta['rnnforge.task']!r}, but the run is {task!r}")
    for key, value in (info or {}).items():  # same task, another run: other classes or window
        if (
            key in ("class_names", "window", "horizon")
            and f"rnnforge.{key}" in meta
            and json.loads(meta[f"rnnforge.{key}"]) != value
        ):
            raise UserError(
                f"{path} was exported from another {task} run: its {key} differ from the run's "
                "(export this run with 'rnnforge export onnx RUN_DIR')"
            )


def provider_setup(
    provider: str,
    spec,
    model_path: Path,
    x: np.ndarray,
    batch_sizes,
    seq_lengths,
    out_dir: Path,
    variant: str = "fp32",
    user_options: dict | None = None,
    io_binding: bool | None = None,
    cuda_graph: bool = False,
) -> ProviderSetup:
    """Providers with their options for ``--provider``; user options override the defaults.

    cuda: cuDNN picks convolution algorithms exhaustively, Conv1D models pad to NC1D
    (``cudnn_conv1d_pad_to_nc1d``), ``enable_cuda_graph`` on request. tensorrt: an engine cache in
    ``bench/trt_cache``, fp16 for the fp16 variant, shape profiles spanning the batch sizes (and
    sequence lengths). IOBinding (inputs and outputs on the device) is on for GPU providers.
    """
    if cuda_graph and provider == "cpu":
        raise UserError("--cuda-graph needs --provider cuda or tensorrt")
    user_options = dict(user_options or {})
    cuda = {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"}
    if _has_conv1d(model_path):
        cuda["cudnn_conv1d_pad_to_nc1d"] = "1"
    if cuda_graph:
        cuda["enable_cuda_graph"] = "1"
    providers: list = ["CPUExecutionProvider"]
    if provider == "cuda":
        providers = [("CUDAExecutionProvider", {**cuda, **user_options}), "CPUExecutionProvider"]
    elif provider == "tensorrt":
        trt = {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(out_dir / "trt_cache"),
            "trt_timing_cache_enable": "True",
            "trt_fp16_enable": str(variant == "fp16"),
            **shape_profiles(spec, x, batch_sizes, seq_lengths),
        }
        providers = [
            ("TensorrtExecutionProvider", {**trt, **user_options}),
            ("CUDAExecutionProvider", cuda),
            "CPUExecutionProvider",
        ]
    elif user_options:
        providers = [("CPUExecutionProvider", user_options)]
    gpu = provider != "cpu"
    return ProviderSetup(
        provider,
        providers,
        io_binding=gpu if io_binding is None else io_binding,
        device="cuda" if gpu else "cpu",
        cuda_graph=cuda_graph,
    )


def shape_profiles(spec, x: np.ndarray, batch_sizes, seq_lengths) -> dict[str, str]:
    """TensorRT optimisation profile over the dynamic axes: min/opt/max batch (and length)."""
    name = spec.onnx.inputs[0].name
    lengths = sorted(seq_lengths or [x.shape[1]]) if len(x.shape) > 1 else []
    batches = sorted(batch_sizes)

    def shape(batch: int, length: int | None) -> str:
        dims = [batch, *x.shape[1:]]
        if length is not None:
            dims[1] = length
        return f"{name}:" + "x".join(str(d) for d in dims)

    dynamic_time = len(spec.onnx.inputs[0].axes) > 1 and isinstance(spec.onnx.inputs[0].axes[1], str)
    lo, hi = (lengths[0], lengths[-1]) if dynamic_time else (None, None)
    return {
        "trt_profile_min_shapes": shape(batches[0], lo),
        "trt_profile_opt_shapes": shape(batches[len(batches) // 2], hi),
        "trt_profile_max_shapes": shape(batches[-1], hi),
    }


def _has_conv1d(model_path: Path) -> bool:
    """Whether the graph convolves over one spatial axis (Keras Conv1D: a 1 x k kernel)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "Conv":
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
            if len(kernel) == 1 or (len(kernel) == 2 and 1 in kernel and kernel != [1, 1]):
                return True
    return False


class OrtEngine:
    """An ONNX Runtime session (or one per shape, with CUDA graphs) that runs as ``setup`` says."""

    def __init__(self, path: Path, setup: ProviderSetup, input_name: str, threads: int | None):
        self.path, self.setup, self.input_name, self.threads = path, setup, input_name, threads
        self.session, self.creation_s = open_session(path, setup, threads)
        self._by_shape: dict[tuple, object] = {}

    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _session_for(self, shape: tuple):
        if not self.setup.cuda_graph:
            return self.session
        if shape not in self._by_shape:  # a captured CUDA graph replays one shape only
            self._by_shape[shape] = open_session(self.path, self.setup, self.threads)[0]
        return self._by_shape[shape]

    def bind(self, x: np.ndarray):
        """A zero-argument call that runs the model on ``x`` (inputs bound once with IOBinding)."""
        session = self._session_for(x.shape)
        if not self.setup.io_binding:
            return lambda: session.run(None, {self.input_name: x})
        binding = self._bind_on_device(session, x)
        return lambda: session.run_with_iobinding(binding)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The first output, on the host."""
        x = np.ascontiguousarray(x)
        session = self._session_for(x.shape)
        if not self.setup.io_binding:
            return session.run(None, {self.input_name: x})[0]
        binding = self._bind_on_device(session, x)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _bind_on_device(self, session, x: np.ndarray):
        import onnxruntime as ort

        binding = session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, self.setup.device, 0))
        for output in session.get_outputs():
            binding.bind_output(output.name, self.setup.device)
        return binding


class TfEngine:
    """TensorFlow's ``tf.function`` with the same interface as ``OrtEngine``."""

    def __init__(self, call):
        self.call = call

    def bind(self, x: np.ndarray):
        return lambda: self.call(x).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.call(x).numpy()


def open_session(path: Path, setup: ProviderSetup, threads: int | None):
    """Create the ONNX Runtime session; refuse one that did not get the requested provider."""
    import onnxruntime as ort

    wanted = setup.providers[0][0] if isinstance(setup.providers[0], tuple) else setup.providers[0]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(
            f"--provider {setup.name}: {wanted} is not in this onnxruntime build (available: {', '.join(available)})"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    started = time.perf_counter()
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=setup.providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidArgument for bad provider options
        if isinstance(exc, (UserError, MemoryError)):
            raise
        raise ProviderError(
            f"--provider {setup.name}: ONNX Runtime could not create a session for {path}: "
            + str(exc).strip().splitlines()[0]
        ) from None
    creation = time.perf_counter() - started
    used = session.get_providers()
    if used[0] != wanted:
        raise ProviderError(
            f"--provider {setup.name}: ONNX Runtime fell back to {used[0]} (no usable "
            f"{wanted}: no GPU or CUDA/cuDNN libraries); refusing to label those numbers "
            f"as {setup.name}"
        )
    return session, creation


def tf_function(model, spec, threads: int | None):
    """``model`` as a ``tf.function`` with the spec's fixed input signature."""
    import tensorflow as tf

    if threads:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    from rnnforge.export.onnx_export import input_signature

    return tf.function(lambda x: model(x, training=False), input_signature=input_signature(model, spec))


def time_calls(call, warmup: int, runs: int, max_seconds: float) -> list[float]:
    """Latencies in ms of ``call()`` after ``warmup`` untimed calls; stops after ``max_seconds``
    once ``MIN_RUNS`` calls are timed."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(latencies) < runs:
        latencies.append(_timed(call) * 1e3)
        if len(latencies) >= MIN_RUNS and time.perf_counter() > deadline:
            break
    return latencies


def latency_stats(latencies_ms: list[float], batch_size: int) -> dict:
    """min/mean/percentiles (p99.9 as ``p99_9``) in ms and samples per second for one series."""
    values = np.asarray(latencies_ms)
    percentiles = {f"p{p:g}".replace(".", "_"): float(np.percentile(values, p)) for p in PERCENTILES}
    return {
        "runs": int(len(values)),
        "latency_ms": {
            "min": float(values.min()),
            "mean": float(values.mean()),
            **percentiles,
            "max": float(values.max()),
        },
        "throughput_per_s": float(batch_size / (values.mean() / 1e3)),
    }


def ratios(rows: list[dict], engine: str = "onnxruntime") -> dict:
    """``engine`` / TensorFlow p50 latency per batch size (below 1: ONNX Runtime is faster)."""
    by_key = {(r["engine"], r["batch_size"]): r["latency_ms"]["p50"] for r in rows if r.get("seq_len") is None}
    return {
        str(b): by_key[(engine, b)] / by_key[("tensorflow", b)]
        for (e, b) in by_key
        if e == engine and ("tensorflow", b) in by_key
    }


def scenarios(rows: list[dict]) -> dict:
    """MLPerf-style figures per engine: SingleStream p90 (batch 1) and Offline samples/s (best batch)."""
    out = {}
    for engine in sorted({r["engine"] for r in rows}):
        mine = [r for r in rows if r["engine"] == engine and r.get("seq_len") is None]
        single = next((r for r in mine if r["batch_size"] == 1), None)
        best = max(mine, key=lambda r: r["throughput_per_s"])
        out[engine] = {
            "single_stream_p90_ms": single["latency_ms"]["p90"] if single else None,
            "offline_samples_per_s": best["throughput_per_s"],
            "offline_batch_size": best["batch_size"],
        }
    return out


def score_engines(predictors: dict, spec, x: np.ndarray, y: np.ndarray, info: dict, split: str) -> dict:
    """Each engine's task scores on the whole split, its agreement with TensorFlow and the score deltas.

    ``agreement`` is the fp32 ONNX Runtime engine's; ``agreement_by_engine`` and
    ``delta_vs_tensorflow`` cover every ONNX Runtime engine.
    """
    predictions = {
        name: np.concatenate([call(x[i : i + SCORE_BATCH]) for i in range(0, len(x), SCORE_BATCH)])
        for name, call in predictors.items()
    }
    reference = predictions["tensorflow"]
    scores = {name: spec.score(x, y, p, info) for name, p in predictions.items()}
    agreement, delta = {}, {}
    for name, pred in predictions.items():
        if name == "tensorflow":
            continue
        agreement[name] = {"max_abs_diff": float(np.max(np.abs(pred.astype(np.float64) - reference)))}
        if spec.kind == "classification":
            agreement[name]["top1_agreement"] = float(np.mean(pred.argmax(-1) == reference.argmax(-1)))
        delta[name] = {
            k: float(v - scores["tensorflow"][k])
            for k, v in scores[name].items()
            if isinstance(v, float) and k in scores["tensorflow"]
        }
    first = next(n for n in predictions if n != "tensorflow")
    return {
        "split": split,
        "examples": int(len(x)),
        "agreement": agreement[first],
        "agreement_by_engine": agreement,
        "delta_vs_tensorflow": delta,
        **scores,
    }


def validate_result(result: dict) -> None:
    """Check ``result`` against ``bench.schema.json`` (a bug here must not write a bad report)."""
    import jsonschema

    jsonschema.validate(result, json.loads(SCHEMA_PATH.read_text()))


def summary_line(result: dict) -> str:
    """One line per batch size: each ONNX Runtime engine vs TF p50, and their ratio."""
    by_key = {(r["engine"], r["batch_size"]): r["latency_ms"]["p50"] for r in result["latency"] if r["seq_len"] is None}
    lines = []
    for engine, by_batch in result["ratios_over_tf"].items():
        label = "ORT" if engine == "onnxruntime" else "ORT " + engine.split("_", 1)[1]
        lines += [
            f"batch {b}: {label} {by_key[(engine, int(b))]:.3f} ms vs TF {by_key[('tensorflow', int(b))]:.3f} ms "
            f"(x{ratio:.2f})"
            for b, ratio in by_batch.items()
        ]
    return "\n".join(lines)


def tile_batch(x: np.ndarray, batch_size: int) -> np.ndarray:
    """The first ``batch_size`` examples of ``x`` (repeated when ``x`` has fewer), contiguous."""
    reps = -(-batch_size // len(x))
    return (
        np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size])
        if reps > 1
        else np.ascontiguousarray(x[:batch_size])
    )


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
