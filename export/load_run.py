"""``rnnforge bench load RUN_DIR``: a run's ONNX model under load, and the serving configuration to ship.

Reads what ``bench`` reads (the ONNX variants, ``eval.npz``, ``config.json``); every request is
one stored evaluation example (the forecaster's three named inputs included). Without
``--slo-p99-ms`` it measures the configuration the options name (``--variant``, ``--threads``,
``--instances``, ``--max-batch``, ``--max-queue-delay-ms``) at each ``--concurrency`` (closed
loop) and ``--request-rate`` (open loop, Poisson); with it, ``export.capacity.search`` finds the
highest rate within the SLO and ``bench/serving.json`` records the settings
(``rnnforge.serving.load`` reads it). Writes ``bench/load.json``, ``bench/load_vs_rate.png``,
``bench/load.md``/``load.html``, and refreshes ``bench/report.md`` when ``bench`` wrote one.

    rnnforge bench load runs/sketch --concurrency 1,2,4 --request-rate 500,1000 --max-batch 8
    rnnforge bench load runs/sketch --slo-p99-ms 10
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnforge.core import fileio, plots
from rnnforge.core.arrays import Inputs, count, example_bytes
from rnnforge.core.errors import ProviderError, UserError, first_line
from rnnforge.core.machine import machine_info, versions
from rnnforge.core.progress import eta_text
from rnnforge.core.run_dir import RunDir
from rnnforge.core.run_files import read_json, read_serving
from rnnforge.export.capacity import Config, Engines, default_space, search, to_json
from rnnforge.export.load import (
    STABILITY,
    STABLE_WINDOWS,
    Batcher,
    gpu_memory_bytes,
    measure_closed_loop,
    measure_open_loop,
    padded_runner,
    peak_rss_bytes,
    reset_peak_rss,
    session_runner,
)
from rnnforge.export.settings import VARIANTS, BenchSettings, available_cores, variant_path

LOAD_SCHEMA = 1
SERVING_SCHEMA = 1


@dataclass(frozen=True)
class LoadSettings:
    """Every ``bench load`` option but the run dir."""

    concurrency: tuple[int, ...] = ()
    request_rates: tuple[float, ...] = ()
    variant: str = "fp32"
    provider: str = "cpu"
    threads: int | None = None
    instances: int = 1
    max_batch: int = 1
    max_queue_delay_ms: float = 0.0
    slo_p99_ms: float | None = None
    variants: tuple[str, ...] = ()  # the search's; empty: every variant the run has
    time_limit_s: float = 240.0
    max_windows: int = 6
    stability: float = STABILITY
    seed: int = 0

    def checked(self) -> LoadSettings:
        if self.variant not in VARIANTS:
            raise UserError(f"--variant {self.variant!r}: expected one of {', '.join(VARIANTS)}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise UserError(f"--variants: unknown variant {unknown[0]!r}; expected some of {', '.join(VARIANTS)}")
        if any(c < 1 for c in self.concurrency):
            raise UserError(f"--concurrency must be positive integers, got {list(self.concurrency)}")
        if any(not r > 0 for r in self.request_rates):
            raise UserError(f"--request-rate must be positive numbers (requests/s), got {list(self.request_rates)}")
        if self.slo_p99_ms is not None and not self.slo_p99_ms > 0:
            raise UserError(f"--slo-p99-ms must be above 0, got {self.slo_p99_ms:g}")
        if self.max_batch < 1 or self.instances < 1 or self.max_queue_delay_ms < 0:
            raise UserError("--max-batch and --instances must be at least 1, --max-queue-delay-ms at least 0")
        if self.max_windows < STABLE_WINDOWS:
            raise UserError(f"--max-windows must be at least {STABLE_WINDOWS} (the stability rule compares 3)")
        if not self.time_limit_s > 0:
            raise UserError(f"--time-limit must be above 0 seconds, got {self.time_limit_s:g}")
        if self.slo_p99_ms is not None and (self.concurrency or self.request_rates):
            raise UserError("--slo-p99-ms searches the rates itself: give it without --concurrency and --request-rate")
        concurrency = self.concurrency or (() if self.request_rates or self.slo_p99_ms else (1, 2, 4))
        return dataclasses.replace(self, concurrency=concurrency, threads=self.threads or available_cores())

    def config(self) -> Config:
        return Config(
            self.variant, self.provider, self.threads, self.instances, self.max_batch, self.max_queue_delay_ms
        )


@dataclass
class OrtEngines(Engines):
    """ONNX Runtime sessions of a run's variants: ``open(config)`` gives one ``run(batch)`` per
    instance, each its own session with ``config.threads`` intra-op threads."""

    paths: dict[str, Path]
    shapes: dict | tuple
    out_dir: Path
    opened: list = field(default_factory=list)

    def open(self, config: Config) -> list:
        """On a GPU every batch is padded to the configuration's max batch (``padded_runner`` says
        why), warmed up here: the session sees one input shape; on a GPU a full batch of these
        models costs about what a small one does."""
        from rnnforge.export.engines import open_session, provider_setup, session_options

        path = self.paths[config.variant]
        settings = BenchSettings(provider=config.provider, batch_sizes=(1, config.max_batch), threads=config.threads)
        setup = provider_setup(settings, path, self.shapes, self.out_dir, config.variant)
        runners = []
        for _ in range(config.instances):
            session, _ = open_session(path, setup, session_options(config.threads))
            run = session_runner(session, [i.name for i in session.get_inputs()])
            if config.provider != "cpu":
                session.run(None, self.zeros(session, config.max_batch))
                run = padded_runner(run, [config.max_batch])
            runners.append(run)
        return runners

    def zeros(self, session, size: int) -> dict:
        """A batch of ``size`` zero examples for each input of ``session``."""
        from rnnforge.export.engines import ORT_DTYPES

        inputs = session.get_inputs()
        shapes = self.shapes if isinstance(self.shapes, dict) else {inputs[0].name: self.shapes}
        return {i.name: np.zeros((size, *shapes[i.name]), ORT_DTYPES.get(i.type, np.float32)) for i in inputs}


def usable_providers() -> list[str]:
    """cpu, and cuda where this onnxruntime has it and a GPU answers ``nvidia-smi``."""
    import shutil

    import onnxruntime as ort

    found = ["cpu"]
    if "CUDAExecutionProvider" in ort.get_available_providers() and shutil.which("nvidia-smi"):
        found.append("cuda")
    return found


def run_load(run_dir: Path, settings: LoadSettings, progress=print) -> dict:
    """Measure, write ``bench/load.json`` (and ``serving.json`` with an SLO), the plot and the
    report; return the result with ``report`` and ``summary`` (one line) added."""
    from rnnforge.export.bench import load_target

    settings = settings.checked()
    run = RunDir(Path(run_dir))
    if run.path.is_dir():
        fileio.check_writable(run.bench, "bench's output folder")
    searching = settings.slo_p99_ms is not None
    variants = settings.variants or (
        tuple(v for v in VARIANTS if variant_path(run.onnx, v).is_file()) if searching else (settings.variant,)
    )
    if not searching and settings.variant not in variants:
        variants = (settings.variant,)
    largest = max(64 if searching else settings.max_batch, 1)
    checks = BenchSettings(variants=variants, batch_sizes=(1, largest), tf_baseline="none").checked()
    target = load_target(run, checks, None)  # every file it reads, checked before any work
    bench = earlier_bench(run)
    x = target.eval_set.x
    shapes = {n: a.shape[1:] for n, a in x.items()} if isinstance(x, dict) else x.shape[1:]
    engines = OrtEngines(target.paths, shapes, run.bench)
    load_before = os.getloadavg()
    started = time.time()
    progress(
        f"{target.spec.name}: {count(x)} stored examples, one per request; {available_cores()} core(s); "
        f"load average {load_before[0]:.1f} (other work on this machine slows every figure)"
    )
    result = {
        "schema_version": LOAD_SCHEMA,
        "kind": "load",
        "task": target.spec.name,
        "run_dir": str(run.path.resolve()),
        "onnx_models": {v: str(p.resolve()) for v, p in target.paths.items()},
        "machine": machine_info(),
        "versions": versions(),
        "rule": {
            "stability": f"Windows repeat until the last {STABLE_WINDOWS} agree: their throughput and their p99 "
            f"each within max/min {1 + settings.stability:g} (perf_analyzer's rule), at most "
            f"{4 if searching else settings.max_windows} windows per point",
            "latency": "from each request's scheduled send time (open loop) or its send (closed loop)",
        },
        "eval_inputs_bytes": example_bytes(x) * count(x),
    }
    if searching:
        providers = usable_providers() if settings.provider == "cpu" else [settings.provider]
        space = default_space(variants, providers, available_cores())
        progress(
            f"search: variants {', '.join(variants)}; providers {', '.join(providers)}; threads "
            f"{', '.join(map(str, space.threads))}; instances {', '.join(map(str, space.instances))}; "
            f"SLO p99 {settings.slo_p99_ms:g} ms; time limit {settings.time_limit_s:g} s"
        )
        found = _guarded(
            lambda: search(engines, space, x, settings.slo_p99_ms, settings.time_limit_s, progress, max_windows=4)
        )
        result["search"] = to_json(found)
        result["points"] = result["search"].pop("probes")
    else:
        result["config"] = settings.config().to_dict()
        result["points"] = _guarded(lambda: sweep(engines, settings, x, progress))
    result["gpu_memory_bytes"] = gpu_memory_bytes() if settings.provider != "cpu" else None
    result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    result["seconds"] = time.time() - started
    write_load_outputs(run, result, settings, target.source_run, bench)
    return {**result, "report": str(run.bench / "load.md"), "summary": summary_line(result)}


def _guarded(work):
    """Run ``work``; a session ONNX Runtime refuses is one line (ProviderError keeps exit 4)."""
    from rnnforge.export.engines import invalid_argument

    try:
        return work()
    except (UserError, ProviderError):
        raise
    except MemoryError:
        raise UserError("bench load ran out of memory: lower --max-batch or --instances") from None
    except Exception as exc:
        if not invalid_argument(exc):
            raise
        raise UserError(f"ONNX Runtime refused the stored inputs: {first_line(exc)}") from None


def sweep(engines: Engines, settings: LoadSettings, x: Inputs, progress=print) -> list[dict]:
    """The configuration the options name, at each concurrency (closed loop) and rate (open loop)."""
    config = settings.config()
    runners = engines.open(config)
    points = []
    total = len(settings.concurrency) + len(settings.request_rates)
    progress(f"{config.label()}: {total} point(s), each up to {settings.max_windows} measurement windows")
    started = time.monotonic()

    def show(point: dict) -> None:
        points.append(_with_memory(point, config))
        where = f"[{len(points)}/{total}]"
        if len(points) < total:
            where += f" {eta_text(time.monotonic() - started, len(points), total)}"
        progress(f"{point_line(point)}  {where}")

    try:
        with Batcher(runners, config.max_batch, config.queue_delay_ms / 1e3) as batcher:
            measure_closed_loop(batcher, x, 1, windows=1, min_window_s=0.3, warmup_s=0.1)  # warm-up
            for clients in settings.concurrency:
                reset_peak_rss()
                show(
                    measure_closed_loop(
                        batcher, x, clients, max_windows=settings.max_windows, stability=settings.stability
                    ).to_dict()
                )
            for rate in settings.request_rates:
                reset_peak_rss()
                show(
                    measure_open_loop(
                        batcher,
                        x,
                        rate,
                        max_windows=settings.max_windows,
                        stability=settings.stability,
                        seed=settings.seed,
                    ).to_dict()
                )
    finally:
        engines.close(runners)
    return points


def _with_memory(point: dict, config: Config) -> dict:
    return {**point, "settings": config.to_dict(), "peak_rss_bytes": peak_rss_bytes()}


def point_line(point: dict) -> str:
    """``open 500 req/s: 498 answered/s, p50 1.2 ms p99 4.0 ms (queue p99 2.1, compute p50 0.9), mean batch 2.3, stable``"""
    what = f"{point['offered']:,.0f} req/s" if point["mode"] == "open" else f"{point['offered']:g} client(s)"
    lat, queue, compute = point["latency_ms"], point["queue_ms"], point["compute_ms"]
    return (
        f"{point['mode']:>6} {what}: {point['throughput_per_s']:,.0f} answered/s, p50 {_ms(lat['p50'])} ms "
        f"p99 {_ms(lat['p99'])} ms (queue p99 {_ms(queue['p99'])}, compute p50 {_ms(compute['p50'])}), "
        f"mean batch {point['mean_batch'] or 0:.1f}, {'stable' if point['stable'] else 'not stable'} "
        f"after {point['windows_measured']} window(s)"
    )


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_line(result: dict) -> str:
    if "search" in result:
        s = result["search"]
        confirmed = s.get("confirmed") or {}
        verdict = (
            "confirmed by a second run"
            if confirmed.get("within_slo")
            else "NOT confirmed by a second run" + (f" (p99 {confirmed['p99_ms']:.2f} ms)" if confirmed else "")
        )
        ratio = f", {s['over_baseline']:.1f}x one-at-a-time serving" if s.get("over_baseline") else ""
        return (
            f"{result['task']}: {s['rate_per_s']:,.0f} req/s within p99 {s['slo_p99_ms']:g} ms with "
            f"{Config(**s['settings']).label()}{ratio}; {verdict}; search {s['search_seconds']:.0f} s"
        )
    return f"{result['task']}: {len(result['points'])} load point(s) measured"


def write_load_outputs(
    run: RunDir, result: dict, settings: LoadSettings, source_run: str, bench: dict | None = None
) -> None:
    """The plot, load.json, serving.json (with an SLO), load.md/html and, with ``bench`` (the run's
    bench.json, ``earlier_bench``), its report again with the serving section (each file written atomically)."""
    from rnnforge.export.load_report import load_markdown
    from rnnforge.export.report import bench_markdown, write_report

    out = run.bench
    curves, slo, chosen = curve_data(result)
    plots.latency_vs_rate(curves, out / "load_vs_rate.png", slo, chosen)
    serving = None
    if "search" in result:
        serving = serving_record(result, source_run)
    fileio.write_json(out / "load.json", result)
    if serving is not None:
        fileio.write_json(out / "serving.json", serving)
    write_report(out / "load.md", load_markdown(result, run), title=f"rnnforge serving capacity: {result['task']}")
    if bench is not None:  # bench's own result (earlier_bench): its report with the serving section
        write_report(out / "report.md", bench_markdown(bench, run), title=f"rnnforge report: {bench['task']}")


def serving_record(result: dict, source_run: str) -> dict:
    """``bench/serving.json``: what ``rnnforge.serving.load`` needs, and the evidence."""
    s = result["search"]
    settings = s["settings"]
    return {
        "schema_version": SERVING_SCHEMA,
        "kind": "serving",
        "task": result["task"],
        "source_run": source_run,
        "model": Path(result["onnx_models"][settings["variant"]]).name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": result["machine"],
        "load_average": result.get("load_average"),
        **{k: v for k, v in s.items() if k != "probes"},
    }


#: Configurations the search's plot draws: the chosen one, the baseline and the best runner-ups.
PLOTTED = 4


def curve_data(result: dict) -> tuple[dict, float | None, tuple | None]:
    """The plot's curves (configuration label -> (answered/s, p50, p99) points, by load offered),
    SLO and chosen point; of a search, the chosen configuration, the baseline and runner-ups."""
    search = result.get("search")
    shown = None
    if search:
        shown = [search["settings"], search["baseline"]["settings"]]
        shown += [r["settings"] for r in search["runner_ups"] if r["rate_per_s"]][: PLOTTED - 1]
    offered: dict[str, list] = {}
    for point in result["points"]:
        if shown is not None and point["settings"] not in shown:
            continue
        label = Config(**point["settings"]).label()
        if point.get("mode") == "closed":
            label += " (closed loop)"
        p50 = point["p50_ms"] if "p50_ms" in point else point["latency_ms"]["p50"]
        p99 = point["p99_ms"] if "p99_ms" in point else point["latency_ms"]["p99"]
        load = point.get("rate_per_s", point.get("offered", 0))
        offered.setdefault(label, []).append((load, (point["throughput_per_s"], p50, p99)))
    curves = {label: [p for _, p in sorted(points, key=lambda item: item[0])] for label, points in offered.items()}
    if not search:
        return curves, None, None
    chosen = None
    if search["rate_per_s"]:
        chosen = (Config(**search["settings"]).label(), search["throughput_per_s"], search["p99_ms"])
    return curves, search["slo_p99_ms"], chosen


def load_serving_json(path: Path) -> dict:
    """A ``serving.json``, checked against its schema (``run_files.read_serving``: one-line errors)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path} does not exist: find the serving settings first with "
            f"'rnnforge bench load {path.parent.parent} --slo-p99-ms X'"
        )
    return read_serving(path)


def earlier_bench(run: RunDir) -> dict | None:
    """bench/bench.json, when 'bench' wrote one that follows its schema (its report gets the serving
    section); read before any work, so the load test never ends on it. Another one is left as it is."""
    from rnnforge.export.results import SCHEMA_PATH

    path = run.bench / "bench.json"
    if not path.is_file():
        return None
    try:
        return read_json(path, SCHEMA_PATH)
    except UserError as exc:
        print(f"note: {run.bench / 'report.md'} keeps its earlier serving section: {exc}", flush=True)
        return None
