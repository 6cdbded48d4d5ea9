"""The highest request rate one replica sustains within a p99 latency SLO, and with which settings.

``search`` answers Model Analyzer's question for a model on ONNX Runtime, within a time limit
(``rnnforge bench load RUN --slo-p99-ms X``):

1. **Profile** (seconds): each engine (variant x provider x intra-op threads) runs batches of
   1, 2, 4, ... one at a time, no load, until a batch takes more than half the SLO: the compute
   time ``t(b)`` of each batch size.
2. **Candidates** from the profile: for every engine and number of instances (threads x instances
   within the cores, on the CPU), two max batches among those with ``2 t(b) <= SLO``: the most
   efficient (highest ``b / t(b)``) and the largest (``candidates`` says why both). Each has a
   **ceiling**, ``instances x b / t(b)`` at its best batch: no queue can make it serve faster. Candidates are
   measured best ceiling first, after the baselines (one request at a time: fp32, one instance,
   batch 1, on every core as ONNX Runtime defaults to, and on one thread; the better counts), and one whose ceiling is below the best rate already measured is
   **dominated** and skipped; so is everything once the time limit would be passed.
3. **Rate search** per candidate: open-loop probes (``export.load.measure_open_loop``) from 60 %
   of its ceiling, up by 1.6x while sustained, down by half while not, then bisection (geometric)
   until the bracket is within ``RESOLUTION`` (10 %), starting no probe after a sixth of the time
   limit (so one configuration cannot take the search's time). A probe is **sustained** when its p99 (from
   the scheduled send times) is within the SLO and it answered at least 95 % of what arrived
   (a queue that grows fails one or the other); a probe whose p50 passes the SLO stops early, and
   a configuration not sustained at an eighth of its first rate is given up (a baseline goes
   down to 1/64: the goal divides by its rate).
4. The best candidate then tries a **queue delay** (``min(SLO / 10, t(b))``), kept if it sustains
   more; and a **confirming run** measures it again, fresh, at the rate found. One that misses the
   SLO is recorded (``refuted``) and the next runs at 80 % of that rate (at most ``CONFIRM_TRIES``
   runs, within the time limit): the recommended rate is the confirmed one, or the recommendation
   says that none was confirmed.

Every probe prints one line (configuration, rate, p99, verdict, time left).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnforge.core.arrays import Inputs, count, rows
from rnnforge.export.load import Batcher, measure_open_loop, peak_rss_bytes, reset_peak_rss

RESOLUTION = 0.10
#: A probe answered at least this share of the requests that arrived in its windows.
ANSWERED = 0.95
MAX_PROBES = 7
#: A configuration's rate search starts no new probe after this share of the time limit (1/6).
PER_CONFIG = 6
#: Confirming runs at most: the search's rate, then 80 % of it, then 64 %, until one holds.
CONFIRM_TRIES = 3
BATCH_LADDER = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Config:
    """One serving configuration."""

    variant: str = "fp32"
    provider: str = "cpu"
    threads: int = 1
    instances: int = 1
    max_batch: int = 1
    queue_delay_ms: float = 0.0

    def engine(self) -> tuple[str, str, int]:
        return self.variant, self.provider, self.threads

    def label(self) -> str:
        """``fp32 cpu 1 thread x 2 instances, batch <= 16, delay 0 ms``"""
        return (
            f"{self.variant} {self.provider} {self.threads} thread{'s' if self.threads > 1 else ''} x "
            f"{self.instances} instance{'s' if self.instances > 1 else ''}, batch <= {self.max_batch}, "
            f"delay {self.queue_delay_ms:g} ms"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Space:
    """What the search may change: variants, providers, intra-op threads, instances (all cores:
    ``cores``)."""

    variants: tuple[str, ...] = ("fp32",)
    providers: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] = (1,)
    instances: tuple[int, ...] = (1,)
    cores: int = 1
    max_batch: int = 64

    def baselines(self) -> list[Config]:
        """One request at a time: fp32 (or the first variant), one instance, batch 1, with every
        core (ONNX Runtime's default) and, where that differs, one thread."""
        variant = "fp32" if "fp32" in self.variants else self.variants[0]
        return [Config(variant, self.providers[0], t, 1, 1, 0.0) for t in dict.fromkeys((self.cores, 1))]


#: Sessions side by side on one GPU: they share its kernels' queue, so more than two only add
#: contention (two overlap one's host work with the other's kernels).
GPU_INSTANCES = 2


def default_space(variants: Sequence[str], providers: Sequence[str], cores: int, max_batch: int = 64) -> Space:
    """Threads 1 and every core; instances 1 .. cores on the CPU, 1 .. ``GPU_INSTANCES`` on a GPU."""
    threads = tuple(sorted({1, cores}))
    most = max(cores if "cpu" in providers else 1, GPU_INSTANCES if set(providers) - {"cpu"} else 1)
    return Space(tuple(variants), tuple(providers), threads, tuple(range(1, most + 1)), cores, max_batch)


class Engines(abc.ABC):
    """Opens the instances of a configuration: ``open(config) -> list of run(batch)`` callables,
    and ``close(runners)``. ``OrtEngines`` opens ONNX Runtime sessions; tests pass a fake."""

    @abc.abstractmethod
    def open(self, config: Config) -> list[Callable]:
        """One ``run(batch)`` callable per instance of ``config``."""

    def close(self, runners: list[Callable]) -> None:  # noqa: B027 (optional: nothing to release by default)
        """Release what ``open`` made."""


@dataclass
class Probe:
    config: Config
    rate: float
    sustained: bool
    figures: dict


@dataclass
class Measured:
    """A configuration's rate search: its best sustained rate (0 if none) and every probe."""

    config: Config
    ceiling: float | None
    probes: list[Probe]
    peak_rss_bytes: int | None = None

    @property
    def best(self) -> Probe | None:
        sustained = [p for p in self.probes if p.sustained]
        return max(sustained, key=lambda p: p.rate) if sustained else None

    @property
    def rate(self) -> float:
        return self.best.rate if self.best else 0.0


def shortfall(figures: dict, slo_ms: float) -> str | None:
    """Why a probe is not sustained, in words for the console and the report; ``None`` when it is
    (within the SLO at p99, from scheduled times, and answering what arrived: the module doc). A
    queue that grows can keep its p99 within the SLO over a short run and still fall behind."""
    p99 = figures["latency_ms"]["p99"]
    arrived = figures["requests"] / max(figures["seconds"], 1e-9)
    if figures["aborted"]:
        return "stopped early: p50 over the SLO"
    if p99 is None:
        return "no request answered"
    if p99 > slo_ms:
        return f"p99 {p99:.2f} ms over the {slo_ms:g} ms SLO"
    if figures["throughput_per_s"] < ANSWERED * arrived:
        return (
            f"answered {figures['throughput_per_s']:,.0f}/s of {arrived:,.0f}/s arriving "
            f"(under {ANSWERED:.0%}: the queue grows)"
        )
    return None


def sustained(figures: dict, slo_ms: float) -> bool:
    return shortfall(figures, slo_ms) is None


def profile(engines: Engines, config: Config, x: Inputs, slo_ms: float, max_batch: int) -> dict[int, float]:
    """Compute ms of batches 1, 2, 4, ... on one instance (the 10th percentile of a few calls, one at
    a time: on a busy machine the undisturbed time, so ceilings stay upper bounds), until a batch
    takes more than half the SLO or reaches ``max_batch``."""
    runner = engines.open(dataclasses.replace(config, instances=1))[0]
    times: dict[int, float] = {}
    try:
        for b in (b for b in BATCH_LADDER if b <= max_batch):
            batch = rows(x, np.arange(b) % count(x))
            runner(batch)  # warm-up
            calls, started = [], time.perf_counter()
            while len(calls) < 15 and (len(calls) < 3 or time.perf_counter() - started < 0.15):
                t0 = time.perf_counter()
                runner(batch)
                calls.append((time.perf_counter() - t0) * 1e3)
            times[b] = float(np.percentile(calls, 10))  # what it takes undisturbed: other work only adds
            if times[b] > slo_ms / 2:
                break
    finally:
        engines.close([runner])
    return times


def candidates(space: Space, profiles: dict[tuple, dict[int, float]], slo_ms: float) -> list[tuple[Config, float]]:
    """Configurations worth measuring, with their ceilings (requests/s), best first.

    Per engine and instance count, two max batches: the most efficient batch (the highest
    ``b / t(b)`` within the SLO) and the largest within it (or its half, when they are the same).
    Both matter: under load the batcher fills batches up to the cap, so a cap past the efficient
    batch (video: 0.5 ms a clip alone, 1.6 ms a clip in a batch of 16, its activations out of
    cache) serves fewer requests the busier it gets. A ceiling is ``instances x max b / t(b)`` over
    the batches up to the cap."""
    found: dict[Config, float] = {}
    for (variant, provider, threads), times in profiles.items():
        fits = sorted(b for b, ms in times.items() if 2 * ms <= slo_ms)
        if not fits:
            continue
        per_s = {b: b / (times[b] / 1e3) for b in fits}
        efficient, top = max(fits, key=per_s.get), max(fits)
        caps = {efficient, top} if efficient != top else {top, max(1, top // 2)}
        for instances in space.instances:
            fits_device = threads * instances <= space.cores if provider == "cpu" else instances <= GPU_INSTANCES
            if not fits_device:
                continue
            for cap in caps:
                config = Config(variant, provider, threads, instances, cap, 0.0)
                found[config] = instances * max(v for b, v in per_s.items() if b <= cap)
    return sorted(found.items(), key=lambda item: (-item[1], item[0].max_batch))  # a tie: the smaller cap


def rate_search(
    engines: Engines,
    config: Config,
    x: Inputs,
    slo_ms: float,
    start_rate: float,
    ceiling: float | None,
    report: Callable[[Probe], None],
    max_windows: int = 4,
    seed: int = 0,
    deadline: float | None = None,
    window: dict | None = None,
    give_up: float = 8.0,
) -> Measured:
    """The highest sustained open-loop rate of ``config`` (see the module docstring); not
    sustained at ``start_rate / give_up``, it is given up."""
    runners = engines.open(config)
    reset_peak_rss()
    measured = Measured(config, ceiling, [])
    try:
        with Batcher(runners, config.max_batch, config.queue_delay_ms / 1e3) as batcher:
            lo, hi, rate = 0.0, math.inf, start_rate
            for i in range(MAX_PROBES):
                figures = measure_open_loop(
                    batcher, x, rate, slo_ms=slo_ms, max_windows=max_windows, seed=seed + i, **(window or {})
                ).figures
                probe = Probe(config, rate, sustained(figures, slo_ms), figures)
                measured.probes.append(probe)
                report(probe)
                if probe.sustained:
                    lo = max(lo, rate)
                else:
                    hi = min(hi, rate)
                if deadline is not None and time.perf_counter() > deadline:
                    break
                if hi == math.inf:
                    limit = 1.1 * ceiling if ceiling else math.inf
                    if rate >= limit:
                        break
                    rate = min(rate * 1.6, limit)
                elif lo == 0.0:
                    if rate <= start_rate / give_up * 1.01:
                        break  # not sustained even at start_rate / give_up
                    rate = rate / 2
                elif hi / lo <= 1 + RESOLUTION:
                    break
                else:
                    rate = math.sqrt(lo * hi)
        measured.peak_rss_bytes = peak_rss_bytes()
    finally:
        engines.close(runners)
    return measured


def confirm(
    engines: Engines,
    config: Config,
    x: Inputs,
    slo_ms: float,
    rate: float,
    seed: int = 1000,
    window: dict | None = None,
) -> Probe:
    """A fresh measurement of ``config`` at ``rate`` (new instances, every window the rule needs)."""
    runners = engines.open(config)
    try:
        with Batcher(runners, config.max_batch, config.queue_delay_ms / 1e3) as batcher:
            figures = measure_open_loop(batcher, x, rate, max_windows=6, seed=seed, **(window or {})).figures
    finally:
        engines.close(runners)
    return Probe(config, rate, sustained(figures, slo_ms), figures)


@dataclass
class SearchResult:
    slo_ms: float
    baseline: Measured  # the better of the one-request-at-a-time configurations
    measured: list[Measured]
    chosen: Measured
    confirmation: Probe | None
    refuted: list[dict]  # confirming runs that did not hold, before the one in ``confirmation``
    profiles: dict
    skipped: list[dict]
    seconds: float
    noise_floor_ms: list[float]  # an empty server's p99 before and after the search

    def ranking(self) -> list[Measured]:
        return sorted(self.measured, key=lambda m: -m.rate)


def search(
    engines: Engines,
    space: Space,
    x: Inputs,
    slo_ms: float,
    time_limit_s: float = 240.0,
    progress: Callable[[str], None] = print,
    max_windows: int = 4,
    window: dict | None = None,
) -> SearchResult:
    """Profile, measure the baseline and the candidates best ceiling first, refine the queue delay
    of the best, confirm it; everything within ``time_limit_s`` (the confirmation included).
    ``window``: ``min_window_s`` / ``window_requests`` for ``measure_open_loop`` (tests shorten them)."""
    started = time.perf_counter()
    deadline = started + time_limit_s
    floor = [noise_floor(x)]
    progress(f"noise floor: an empty server's p99 here is {floor[0]:.2f} ms (what the machine alone adds)")

    def left() -> float:
        return deadline - time.perf_counter()

    profiles: dict[tuple, dict[int, float]] = {}
    engines_wanted = {
        (v, p, t) for v in space.variants for p in space.providers for t in (space.threads if p == "cpu" else (1,))
    }
    engines_wanted.update(b.engine() for b in space.baselines())
    for index, key in enumerate(sorted(engines_wanted), 1):
        times = profile(engines, Config(*key), x, slo_ms, space.max_batch)
        profiles[key] = times
        progress(
            f"profile {key[0]} {key[1]} {key[2]} thread(s): "
            + ", ".join(f"b{b} {ms:.2f} ms" for b, ms in times.items())
            + f"  [engine {index}/{len(engines_wanted)}, ~{max(0.0, left()):.0f} s left]"
        )
    ranked = candidates(space, profiles, slo_ms)
    bases = [(b, 1e3 / profiles[b.engine()][1]) for b in space.baselines()]
    todo = [*bases, *((c, ceil) for c, ceil in ranked if c not in dict(bases))]
    measured: list[Measured] = []
    skipped: list[dict] = []
    spent: list[float] = []
    for index, (config, ceiling) in enumerate(todo):
        best = max((m.rate for m in measured), default=0.0)
        if index >= len(bases) and ceiling < best:
            skipped.append({"config": config.to_dict(), "ceiling_per_s": ceiling, "why": "dominated"})
            continue
        expected = float(np.mean(spent)) if spent else 20.0
        if index >= len(bases) and left() < expected + _confirm_cost(best or ceiling):
            skipped.append({"config": config.to_dict(), "ceiling_per_s": ceiling, "why": "time limit"})
            continue
        t0 = time.perf_counter()
        label = f"[{len(measured) + 1}/{len(todo) - len(skipped)}] {config.label()}"
        measured.append(
            rate_search(
                engines,
                config,
                x,
                slo_ms,
                0.6 * ceiling,
                ceiling,
                _reporter(progress, label, slo_ms, left),
                max_windows,
                seed=index * 100,
                deadline=min(deadline - _confirm_cost(ceiling), time.perf_counter() + time_limit_s / PER_CONFIG),
                window=window,
                give_up=64.0 if index < len(bases) else 8.0,
            )
        )
        spent.append(time.perf_counter() - t0)
    chosen = max(measured, key=lambda m: m.rate)
    if chosen.rate > 0 and chosen.config.max_batch > 1:
        times = profiles[chosen.config.engine()]
        delay = round(min(slo_ms / 10, times[chosen.config.max_batch]), 2)
        if delay > 0 and left() > (np.mean(spent) if spent else 20.0) + _confirm_cost(chosen.rate):
            config = dataclasses.replace(chosen.config, queue_delay_ms=delay)
            label = f"[delay] {config.label()}"
            tried = rate_search(
                engines,
                config,
                x,
                slo_ms,
                chosen.rate,
                chosen.ceiling,
                _reporter(progress, label, slo_ms, left),
                max_windows,
                seed=999,
                deadline=deadline - _confirm_cost(chosen.rate),
                window=window,
            )
            measured.append(tried)
            if tried.rate > chosen.rate * (1 + RESOLUTION / 2):
                chosen = tried
    confirmation, refuted = None, []
    rate = chosen.rate
    while rate > 0:
        confirmation = confirm(engines, chosen.config, x, slo_ms, rate, seed=1000 + len(refuted), window=window)
        p99, missed = confirmation.figures["latency_ms"]["p99"], shortfall(confirmation.figures, slo_ms)
        progress(
            f"confirm {chosen.config.label()} at {rate:,.0f} req/s: "
            + (f"p99 {p99:.2f} ms within the {slo_ms:g} ms SLO" if missed is None else f"NOT sustained, {missed}")
        )
        if confirmation.sustained or len(refuted) == CONFIRM_TRIES - 1 or left() < _confirm_cost(rate * 0.8):
            break
        refuted.append({"rate_per_s": rate, "p99_ms": p99, "missed": missed})
        rate *= 0.8  # the search's rate did not hold: recommend a lower one only once it is confirmed
    floor.append(noise_floor(x))
    progress(f"noise floor after the search: {floor[1]:.2f} ms")
    return SearchResult(
        slo_ms,
        max(measured[: len(bases)], key=lambda m: m.rate),
        measured,
        chosen,
        confirmation,
        refuted,
        {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in profiles.items()},
        skipped,
        time.perf_counter() - started,
        floor,
    )


def noise_floor(x: Inputs, rate: float = 200.0) -> float:
    """p99 ms of an instance that answers at once, at ``rate`` requests/s for about 1.5 s: the
    latency the machine alone adds (thread wake-ups, other processes); a p99 SLO below it cannot
    be held here, whatever the model."""

    def empty(batch):
        return [np.zeros((count(batch), 1), dtype=np.float32)]

    with Batcher([empty]) as batcher:
        figures = measure_open_loop(batcher, x, rate, windows=3, min_window_s=0.5, warmup_s=0.1).figures
    return figures["latency_ms"]["p99"]


def _confirm_cost(rate: float) -> float:
    """Seconds a confirming run may take (6 windows at ``rate``, warm-up, session start)."""
    from rnnforge.export.load import WARMUP_S, window_length

    return WARMUP_S + 6 * window_length(max(rate, 1.0)) + 1.0


def _reporter(progress: Callable[[str], None], label: str, slo_ms: float, left: Callable[[], float]):
    def report(probe: Probe) -> None:
        f = probe.figures
        p99 = f["latency_ms"]["p99"]
        verdict = "ok" if probe.sustained else ("stopped: p50 > SLO" if f["aborted"] else "over")
        progress(
            f"{label}: {probe.rate:,.0f} req/s -> {f['throughput_per_s']:,.0f} answered/s, "
            f"p99 {'-' if p99 is None else f'{p99:.2f}'} ms, mean batch {f['mean_batch'] or 0:.1f}: {verdict} "
            f"(~{max(0.0, left()):.0f} s left)"
        )

    return report


def to_json(result: SearchResult) -> dict:
    """``serving.json``'s search part: the chosen settings and rate, the baseline, runner-ups."""

    def point(m: Measured) -> dict:
        best = m.best
        return {
            "settings": m.config.to_dict(),
            "rate_per_s": m.rate,
            "ceiling_per_s": m.ceiling,
            "p50_ms": best.figures["latency_ms"]["p50"] if best else None,
            "p99_ms": best.figures["latency_ms"]["p99"] if best else None,
            "throughput_per_s": best.figures["throughput_per_s"] if best else None,
            "mean_batch": best.figures["mean_batch"] if best else None,
            "peak_rss_bytes": m.peak_rss_bytes,
        }

    chosen, confirmation = result.chosen, result.confirmation
    baseline = point(result.baseline)
    out = {
        "slo_p99_ms": result.slo_ms,
        "settings": chosen.config.to_dict(),
        **{k: v for k, v in point(chosen).items() if k != "settings"},
        "confirmed": None,
        "baseline": baseline,
        "over_baseline": (chosen.rate / baseline["rate_per_s"]) if baseline["rate_per_s"] else None,
        "runner_ups": [point(m) for m in result.ranking() if m is not chosen][:5],
        "configurations_measured": len(result.measured),
        "skipped": result.skipped,
        "profiles_ms": {k: {str(b): ms for b, ms in v.items()} for k, v in result.profiles.items()},
        "search_seconds": result.seconds,
        "noise_floor_p99_ms": {"before": result.noise_floor_ms[0], "after": result.noise_floor_ms[1]},
        "probes": [
            {"settings": p.config.to_dict(), "rate_per_s": p.rate, "sustained": p.sustained, **_curve_point(p.figures)}
            for m in result.measured
            for p in m.probes
        ],
    }
    out["refuted"] = result.refuted
    if confirmation is not None:
        out["rate_per_s"] = confirmation.rate if confirmation.sustained else chosen.rate
        out["search_rate_per_s"] = chosen.rate
        if confirmation.sustained and result.refuted:
            out["p50_ms"] = confirmation.figures["latency_ms"]["p50"]
            out["p99_ms"] = confirmation.figures["latency_ms"]["p99"]
            out["throughput_per_s"] = confirmation.figures["throughput_per_s"]
        out["over_baseline"] = out["rate_per_s"] / baseline["rate_per_s"] if baseline["rate_per_s"] else None
        out["confirmed"] = {
            "within_slo": confirmation.sustained,  # sustained: within the SLO and keeping up
            "missed": shortfall(confirmation.figures, result.slo_ms),
            "rate_per_s": confirmation.rate,
            "p50_ms": confirmation.figures["latency_ms"]["p50"],
            "p99_ms": confirmation.figures["latency_ms"]["p99"],
            "throughput_per_s": confirmation.figures["throughput_per_s"],
            "stable": confirmation.figures["stable"],
            "windows": confirmation.figures["windows_measured"],
        }
    return out


def _curve_point(figures: dict) -> dict:
    return {
        "throughput_per_s": figures["throughput_per_s"],
        "p50_ms": figures["latency_ms"]["p50"],
        "p99_ms": figures["latency_ms"]["p99"],
        "queue_p99_ms": figures["queue_ms"]["p99"],
        "compute_p50_ms": figures["compute_ms"]["p50"],
        "mean_batch": figures["mean_batch"],
        "stable": figures["stable"],
        "aborted": figures["aborted"],
        "sender_cpu_share": figures["sender_cpu_share"],
        "send_lag_p99_ms": figures["send_lag_ms"]["p99"],
    }
