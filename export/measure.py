"""Each engine timed in its own process: one ``Job``, one fresh Python, one result.

On a few cores, TensorFlow's and ONNX Runtime's thread pools spin and steal each other's cores
when they share a process, so ``rnnforge bench`` runs each engine (TensorFlow, then each ONNX
Runtime variant) alone, one after the other, on the same inputs (``eval.npz``'s ``x``) with the
same batch sizes, lengths and intra-op thread count. ``run_in_subprocess`` starts
``main`` in a new interpreter with the parent's ``sys.path`` (as multiprocessing's spawn does)
and re-raises what went wrong there as the same one-line error. The timing itself follows
tf2onnx's harness plus warm-up and percentiles: warm-up until the latency is stable
(``core.stats.warmup_calls``: three windows of ten calls whose medians agree within 5 %) or
``--warmup`` untimed calls, then up to ``runs`` timed calls (with ``--target-ci``: until the p50's
95 % interval is that narrow), cut after ``max_seconds`` once ``MIN_RUNS`` are in. Each percentile
comes with its distribution-free 95 % interval (``core.stats.quantile_interval``), or none where
the row has too few calls to support one. One closed-loop client: each call starts when the
previous one returned (``rnnforge bench load`` measures concurrent clients).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnforge.core import errors, fileio, stats
from rnnforge.core.arrays import Inputs, concatenate, count, rows
from rnnforge.core.console import verbose
from rnnforge.core.errors import UserError
from rnnforge.export.eval_set import load_eval_set
from rnnforge.export.settings import LIMITS, BenchSettings

MIN_RUNS = 10
#: --warmup auto: windows of WARMUP_WINDOW calls, stable once WARMUP_WINDOWS in a row have medians
#: within WARMUP_TOLERANCE of each other; at most --max-seconds (or LIMITS' calls) of warm-up.
WARMUP_WINDOW, WARMUP_WINDOWS, WARMUP_TOLERANCE = 10, 3, 0.05
SCORE_BATCH = 256
PERCENTILES = (50, 90, 95, 99, 99.9)
TENSORFLOW = "tensorflow"
#: Starts ``main`` in the child with the parent's import path, so both run the same rnnforge.
BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from rnnforge.export.measure import main; sys.exit(main(sys.argv[2:]))"
)
#: Error classes a child may report, by name; they keep their exit codes in the parent.
ERRORS = {cls.__name__: cls for cls in (UserError, errors.ParityError, errors.ProviderError)}


class EngineUnavailable(Exception):
    """The engine cannot run in this environment (TensorFlow is not installed or does not import)."""


@dataclass(frozen=True)
class Job:
    """One engine to time. ``model``: the ONNX file, or ``model.keras`` for TensorFlow;
    ``eval_set``: the ``eval.npz`` whose ``x`` are the inputs; ``settings``: ``BenchSettings.to_dict()``
    with threads resolved; ``setup``: ``ProviderSetup.to_dict()`` (ONNX Runtime only);
    ``predictions``: where to save the engine's first output on every ``x`` (``.npy``), if wanted."""

    engine: str
    model: str
    eval_set: str
    task: str
    settings: dict
    setup: dict | None = None
    predictions: str | None = None


def run_in_subprocess(job: Job, work_dir: Path) -> dict:
    """Run ``job`` in a fresh Python process and return its result (see ``run_job``).

    Raises the child's ``UserError`` (same class, same message) or ``EngineUnavailable``.
    """
    job_path, result_path = Path(work_dir) / f"{job.engine}.job.json", Path(work_dir) / f"{job.engine}.result.json"
    job_path.write_text(json.dumps({"job": asdict(job), "result": str(result_path)}))
    sys.stdout.flush()
    # The child's progress lines go through this process's stdout (the caller may capture it);
    # its stderr (TensorFlow's start-up chatter among it) is shown only when the child fails, or
    # as it comes with ``rnnforge --verbose``.
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP, json.dumps(sys.path), str(job_path)],
            stdout=subprocess.PIPE,
            stderr=None if verbose() else errors,
            text=True,
        )
        try:
            for line in child.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
            code = child.wait()
        except KeyboardInterrupt:  # Ctrl-C to this process alone: its timing process ends with it
            child.kill()
            child.wait()
            raise
        if not result_path.is_file():
            errors.seek(0)
            raise crash_error(job, code, errors.read())
    result = json.loads(result_path.read_text())
    if "error" in result:
        kind, message = result["error"]["type"], result["error"]["message"]
        raise EngineUnavailable(message) if kind == "unavailable" else ERRORS[kind](message)
    return result


def crash_error(job: Job, code: int, stderr: str) -> errors.EngineCrashed:
    """One line for a timing process that died without a result: which engine, how, with which
    provider settings, and the child's last line of output."""
    import signal

    how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
    setup = job.setup or {}
    where = f" on {setup.get('name', 'cpu')}" + (" with --cuda-graph" if setup.get("cuda_graph") else "")
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return errors.EngineCrashed(
        f"the {job.engine} timing process died ({how}){where} before giving a result: a crash inside the engine, "
        "not your input; bench the other variants alone or drop the option that brings it "
        f"(rnnforge --verbose shows its output){'; last line: ' + last if last else ''}"
    )


def main(argv: list[str]) -> int:
    """The child: read the job file ``argv[0]``, run it, write its result (or error) where it says."""
    request = json.loads(Path(argv[0]).read_text())
    job = Job(**request["job"])
    try:
        result = run_job(job)
    except EngineUnavailable as exc:
        result = {"error": {"type": "unavailable", "message": str(exc)}}
    except UserError as exc:
        result = {
            "error": {"type": type(exc).__name__ if type(exc).__name__ in ERRORS else "UserError", "message": str(exc)}
        }
    except Exception as exc:
        from rnnforge.export.engines import invalid_argument

        if not invalid_argument(exc):
            raise
        result = {"error": {"type": "UserError", "message": refused_feed(job, exc)}}
    fileio.write_json(request["result"], result)
    return 2 if "error" in result else 0


def refused_feed(job: Job, error: BaseException) -> str:
    """The line for a feed ONNX Runtime refused (``InvalidArgument``): the stored inputs do not fit
    the model, which is the input's fault (exit 2), not a crash inside the engine."""
    return (
        f"{job.eval_set}: ONNX Runtime refused its inputs for {job.model} ({errors.first_line(error)}); "
        f"re-run 'rnnforge export onnx {Path(job.eval_set).parent}'"
    )


def run_job(job: Job) -> dict:
    """Time ``job.engine`` on every (length, batch size) row; returns ``{"engine", "rows", "samples",
    ...}`` plus, for ONNX Runtime, the session's figures and providers, and for TensorFlow the
    machine and versions (a recorded baseline names them)."""
    from rnnforge.core.machine import machine_info, versions

    settings = BenchSettings.from_dict(job.settings)
    x = load_eval_set(Path(job.eval_set), job.task).x
    extra: dict = {}
    if job.engine == TENSORFLOW:
        engine = tensorflow_engine(Path(job.model), job.task, settings.threads)
        extra = {"machine": machine_info(), "versions": versions()}
    else:
        from rnnforge.export.engines import OrtEngine, ProviderSetup

        engine = OrtEngine(Path(job.model), ProviderSetup.from_dict(job.setup), settings.threads)
        first = timed(lambda: engine.predict(x[:1]))  # one array, or NamedArrays
        applied = engine.applied()
        extra = {
            "session": {
                "session_creation_ms": engine.creation_s * 1e3,
                "first_inference_ms": first * 1e3,
                **applied,
                # after the first inference, so a TensorRT engine it builds is cached, not timed twice
                "placement": engine.placement(tile_batch(x, min(settings.batch_sizes))),
            },
            "session_providers": applied["session_providers"],
        }
    rows, samples = time_rows(job.engine, engine, x, settings)
    if job.predictions:
        np.save(job.predictions, predict_all(engine.predict, x))
    return {"engine": job.engine, "rows": rows, "samples": samples, "threads": settings.threads, **extra}


def tensorflow_engine(model_path: Path, task: str, threads: int):
    """``model.keras`` as a ``tf.function`` engine; ``EngineUnavailable`` without TensorFlow."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(f"TensorFlow cannot be imported here ({exc})") from None
    from rnnforge.core.run_dir import RunDir
    from rnnforge.export.engines import TfEngine, tf_function
    from rnnforge.models import get_spec

    model = RunDir(model_path.parent).load_model()
    return TfEngine(tf_function(model, get_spec(task), threads))


def time_rows(name: str, engine, x: Inputs, settings: BenchSettings) -> tuple[list[dict], dict]:
    """One latency row per (length, batch size), printed as it is measured; and the latencies of
    the first batch size at full length, for the distribution plot. Lengths (``--seq-lengths``)
    crop a single input's time axis; bench refuses them for models with a fixed length."""
    rows, samples = [], {}
    for seq_len in [None, *settings.seq_lengths]:
        for batch_size in settings.batch_sizes:
            batch = tile_batch(x if seq_len is None else x[:, -seq_len:], batch_size)
            timing = time_calls(
                engine.bind(batch), settings.warmup, settings.runs, settings.max_seconds, settings.target_ci
            )
            row = {
                "engine": name,
                "batch_size": batch_size,
                "seq_len": seq_len,
                **latency_stats(timing.latencies, batch_size),
                "warmup": {"calls": timing.warmup_calls, "until": timing.warmup_until},
                "stopped": timing.stopped,
            }
            rows.append(row)
            if batch_size == settings.batch_sizes[0] and seq_len is None:
                samples = {"batch_size": batch_size, "latency_ms": timing.latencies}
            print(row_line(row), flush=True)
    return rows, samples


def row_line(row: dict) -> str:
    """``onnxruntime batch    8 len   40: p50 0.412 ms (0.405-0.420)  p99 0.530 ms  19417 samples/s
    (n=1000, warm-up 30)``; a percentile whose interval the row cannot support says so."""
    lat, ci = row["latency_ms"], row.get("ci95_ms", {})
    p50 = ci.get("p50")
    p99 = f"p99 {lat['p99']:.3f} ms" if ci.get("p99") else "p99 n too small"
    warm = f", warm-up {row['warmup']['calls']}" if "warmup" in row else ""
    return (
        f"{row['engine']:>16} batch {row['batch_size']:>4}"
        + (f" len {row['seq_len']:>4}" if row["seq_len"] else "")
        + f": p50 {lat['p50']:.3f} ms"
        + (f" ({p50['low']:.3f}-{p50['high']:.3f})" if p50 else "")
        + f"  {p99}  {row['throughput_per_s']:.0f} samples/s (n={row['runs']}{warm})"
    )


class Timing(NamedTuple):
    """One row's timing: latencies in ms; warm-up calls and why warm-up ended (``fixed``: the
    ``--warmup`` count, ``stable``: ``core.stats.warmup_calls``, ``time limit``: never stable within
    ``--max-seconds``); and why timing ended (``runs``, ``target ci``, ``time limit``)."""

    latencies: list[float]
    warmup_calls: int
    warmup_until: str
    stopped: str


def time_calls(
    call, warmup: int | None, runs: int, max_seconds: float, target_ci: float | None = None, clock=time.perf_counter
) -> Timing:
    """Warm ``call()`` up (``warm_up``), then time it: up to ``runs`` calls, or with ``target_ci``
    until the p50's 95 % interval lies within that fraction of the p50 (``runs`` is no cap then);
    either way ``max_seconds`` ends it once ``MIN_RUNS`` calls are timed. ``clock``: seconds, for
    tests."""
    warmup_calls, warmup_until = warm_up(call, warmup, max_seconds, clock)
    latencies: list[float] = []
    deadline, check_at = clock() + max_seconds, MIN_RUNS
    cap = LIMITS["runs"][0] if target_ci is not None else runs
    while True:
        latencies.append(timed(call, clock) * 1e3)
        n = len(latencies)
        if target_ci is not None and n >= check_at:  # every tenth more calls: the interval is O(n)
            if stats.median_within(latencies, target_ci):
                return Timing(latencies, warmup_calls, warmup_until, "target ci")
            check_at = n + max(MIN_RUNS, n // 10)
        if n >= cap:
            return Timing(latencies, warmup_calls, warmup_until, "runs")
        if n >= MIN_RUNS and clock() > deadline:
            return Timing(latencies, warmup_calls, warmup_until, "time limit")


def warm_up(call, warmup: int | None, max_seconds: float, clock=time.perf_counter) -> tuple[int, str]:
    """``warmup`` untimed calls (``fixed``); or, with ``None``, windows of ``WARMUP_WINDOW`` calls
    until ``core.stats.warmup_calls`` finds the latency stable (``stable``) or ``max_seconds``
    pass (``time limit``). Returns the calls made and which of those ended it."""
    if warmup is not None:
        for _ in range(warmup):
            call()
        return warmup, "fixed"
    seen: list[float] = []
    deadline = clock() + max_seconds
    while True:
        seen += [timed(call, clock) for _ in range(WARMUP_WINDOW)]
        if stats.warmup_calls(seen, WARMUP_WINDOW, WARMUP_TOLERANCE, WARMUP_WINDOWS) is not None:
            return len(seen), "stable"
        if clock() > deadline or len(seen) >= LIMITS["warmup"][0]:
            return len(seen), "time limit"


def latency_stats(latencies_ms: list[float], batch_size: int) -> dict:
    """min/mean/percentiles (p99.9 as ``p99_9``) in ms and samples per second for one series, and
    each percentile's 95 % interval (``ci95_ms``: low, high and exact coverage; None where the
    series is too short to support one: p99 needs 299 calls, p99.9 2,995)."""
    values = np.asarray(latencies_ms)
    keys = {p: f"p{p:g}".replace(".", "_") for p in PERCENTILES}
    percentiles = {keys[p]: float(np.percentile(values, p)) for p in PERCENTILES}
    intervals = {keys[p]: stats.quantile_interval(values, p / 100) for p in PERCENTILES}
    return {
        "runs": int(len(values)),
        "latency_ms": {
            "min": float(values.min()),
            "mean": float(values.mean()),
            **percentiles,
            "max": float(values.max()),
        },
        "ci95_ms": {
            key: None if i is None else {"low": i.low, "high": i.high, "coverage": round(i.coverage, 4)}
            for key, i in intervals.items()
        },
        "throughput_per_s": float(batch_size / (values.mean() / 1e3)),
    }


def predict_all(predict, x: Inputs) -> np.ndarray:
    """``predict`` over ``x`` in batches of ``SCORE_BATCH``, concatenated."""
    return np.concatenate([predict(rows(x, slice(i, i + SCORE_BATCH))) for i in range(0, count(x), SCORE_BATCH)])


def tile_batch(x: Inputs, batch_size: int) -> Inputs:
    """The first ``batch_size`` examples of ``x`` (repeated when ``x`` has fewer), contiguous."""
    reps = -(-batch_size // count(x))
    return rows(concatenate([x] * reps) if reps > 1 else x, slice(0, batch_size))


def timed(fn, clock=time.perf_counter) -> float:
    """Seconds ``fn()`` took."""
    started = clock()
    fn()
    return clock() - started
