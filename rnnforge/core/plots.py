"""Plots for run and bench reports (matplotlib, Agg backend, PNG written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnforge.core.fileio import atomic_path


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _plain_log_ticks(ax, *axes: str) -> None:
    """Tick labels of log axes as plain numbers (600, 2,000; 0.5), not 6 x 10^2, which a reader
    has to decode; matplotlib still picks which ticks to label."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:,.0f}" if x >= 10 else f"{x:g}"

    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(Plain())
        axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1.2, 0.6)))


def _thousands(axis) -> None:
    """A linear axis of large values labelled 500,000, not 500000."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def training_curve(history: Sequence[dict], path: Path, metric: str) -> Path:
    """Loss and ``metric`` per epoch, train vs validation."""
    fig, axes = _figure(1, 2, figsize=(10, 3.6))
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes, ("loss", metric)):
        ax.plot(epochs, [h.get(key) for h in history], marker="o", label="train")
        ax.plot(epochs, [h.get(f"val_{key}") for h in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    n = len(class_names)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = _figure(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        counts[i, j],
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def latency_vs_batch(rows: Sequence[dict], path: Path) -> Path:
    """p50 latency (with p90-p99 whiskers) per batch size for each engine, and throughput."""
    fig, (ax_lat, ax_thr) = _figure(1, 2, figsize=(10, 3.8))
    for engine in sorted({r["engine"] for r in rows}):
        mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["batch_size"])
        batches = [r["batch_size"] for r in mine]
        p50 = np.array([r["latency_ms"]["p50"] for r in mine])
        p99 = np.array([r["latency_ms"]["p99"] for r in mine])
        ax_lat.errorbar(batches, p50, yerr=[np.zeros_like(p50), p99 - p50], marker="o", capsize=3, label=engine)
        ax_thr.plot(batches, [r["throughput_per_s"] for r in mine], marker="o", label=engine)
    batch_sizes = sorted({r["batch_size"] for r in rows})
    for ax, label in ((ax_lat, "latency ms (p50, bar to p99)"), (ax_thr, "samples / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.set_yscale("log")
        _plain_log_ticks(ax, "y")
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return _save(fig, path)


def latency_distribution(samples: dict[str, Sequence[float]], path: Path, batch_size: int) -> Path:
    """Histogram of per-run latencies for each engine at one batch size."""
    fig, ax = _figure(figsize=(7, 3.6))
    all_values = np.concatenate([np.asarray(v) for v in samples.values()])
    bins = np.geomspace(max(all_values.min(), 1e-3), all_values.max() * 1.01, 50)
    for engine, values in samples.items():
        ax.hist(values, bins=bins, alpha=0.6, label=engine)
    ax.set_xscale("log")
    _plain_log_ticks(ax, "x")
    ax.set_xlabel(f"latency ms at batch {batch_size}")
    ax.set_ylabel("runs")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def forecast_vs_actual(
    starts,
    actual: np.ndarray,
    forecast: np.ndarray,
    naive: np.ndarray,
    path: Path,
    split: str,
    units: str,
    holidays=(),
    interval: tuple | None = None,
) -> Path:
    """Next-day (+1) and last-day (+horizon) forecasts against what happened, with the naive line;
    ``holidays`` (datetime64 days, e.g. weekdays the model was told are holidays) are shaded.
    ``interval``: ``(low [n, H], high [n, H], label)``, a forecast interval shaded around the
    model's line (a fan chart)."""
    horizon = actual.shape[1]
    fig, axes = _figure(2, 1, figsize=(11, 6), sharex=True)
    for ax, day in zip(axes, (0, horizon - 1)):
        when = np.asarray(starts, dtype="datetime64[D]") + day
        shown = [h for h in np.asarray(holidays, dtype="datetime64[D]") if len(when) and when[0] <= h <= when[-1]]
        for i, holiday in enumerate(shown):
            ax.axvspan(holiday, holiday + 1, color="orange", alpha=0.25, lw=0, label="holiday" if i == 0 else None)
        if interval is not None:
            ax.fill_between(
                when, interval[0][:, day], interval[1][:, day], color="C0", alpha=0.2, lw=0, label=interval[2]
            )
        ax.plot(when, actual[:, day], color="black", lw=1.4, label="actual")
        ax.plot(when, forecast[:, day], lw=1.2, label="model" if interval is None else "model (median)")
        ax.plot(when, naive[:, day], lw=0.9, ls="--", alpha=0.7, label="naive (7 days earlier)")
        ax.set_title(f"{split} split, forecast for day +{day + 1}")
        ax.set_ylabel(units)
        _thousands(ax.yaxis)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def mae_per_horizon(model_mae: Sequence[float], naive_mae: Sequence[float], path: Path, units: str) -> Path:
    """Bars of MAE for each horizon day, model against the naive baseline."""
    fig, ax = _figure(figsize=(7, 3.6))
    days = np.arange(1, len(model_mae) + 1)
    ax.bar(days - 0.2, model_mae, width=0.4, label="model")
    ax.bar(days + 0.2, naive_mae, width=0.4, label="naive (7 days earlier)")
    ax.set_xticks(days, [f"+{d}" for d in days])
    ax.set_xlabel("horizon day")
    ax.set_ylabel(f"MAE ({units})")
    ax.set_ylim(0, 1.3 * max([*model_mae, *naive_mae, 1e-9]))  # room for the legend above the bars
    _thousands(ax.yaxis)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper center", ncol=2)
    return _save(fig, path)


def throughput_vs_latency(rows: Sequence[dict], path: Path) -> Path:
    """perf_analyzer-style curve: throughput against p50 latency, one point per batch size."""
    fig, ax = _figure(figsize=(7, 4))
    for engine in sorted({r["engine"] for r in rows}):
        mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["batch_size"])
        latency = [r["latency_ms"]["p50"] for r in mine]
        throughput = [r["throughput_per_s"] for r in mine]
        ax.plot(latency, throughput, marker="o", label=engine)
        for r, x, y in zip(mine, latency, throughput):
            ax.annotate(f"b{r['batch_size']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax, "x", "y")
    ax.set_xlabel("p50 latency ms")
    ax.set_ylabel("samples / s")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def latency_vs_seq_len(rows: Sequence[dict], path: Path) -> Path:
    """p50 latency against input length, one line per engine and batch size."""
    fig, ax = _figure(figsize=(7, 4))
    for engine, batch in sorted({(r["engine"], r["batch_size"]) for r in rows}):
        mine = sorted(
            (r for r in rows if r["engine"] == engine and r["batch_size"] == batch), key=lambda r: r["seq_len"]
        )
        ax.plot(
            [r["seq_len"] for r in mine],
            [r["latency_ms"]["p50"] for r in mine],
            marker="o",
            label=f"{engine}, batch {batch}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (rows)")
    ax.set_ylabel("p50 latency ms")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def latency_vs_rate(
    curves: dict[str, Sequence[tuple[float, float, float]]],
    path: Path,
    slo_ms: float | None = None,
    chosen: tuple[str, float, float] | None = None,
) -> Path:
    """Load test: p50 (dashed) and p99 (solid) latency against the rate answered, one colour per
    configuration (``curves``: label -> ``(answered/s, p50 ms, p99 ms)`` points in the order of the
    load offered, so a curve bends back where the server answers less than it is sent), the SLO as
    a horizontal line and the ``chosen`` point ``(label, answered/s, p99 ms)`` marked."""
    fig, ax = _figure(figsize=(8, 4.5))
    for index, (label, points) in enumerate(curves.items()):
        points = [p for p in points if None not in p]
        if not points:
            continue
        colour = f"C{index % 10}"
        rate = [p[0] for p in points]
        ax.plot(rate, [p[2] for p in points], marker="o", ms=3, color=colour, label=f"{label} (p99)")
        ax.plot(rate, [p[1] for p in points], ls="--", marker=".", ms=3, color=colour, alpha=0.6)
    if slo_ms:
        ax.axhline(slo_ms, color="red", lw=1, ls=":", label=f"SLO p99 {slo_ms:g} ms")
    if chosen:
        ax.plot([chosen[1]], [chosen[2]], marker="*", ms=16, color="gold", mec="black", ls="", label="chosen")
    ax.set_yscale("log")
    ax.set_xlabel("answered requests / s")
    ax.set_ylabel("latency ms (p99 solid, p50 dashed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
