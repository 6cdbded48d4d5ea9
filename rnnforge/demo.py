"""``rnnforge demo``: train, export and bench every task on its embedded data; one report."""

from __future__ import annotations

import math
import time
from pathlib import Path

#: The demo is not a long job worth resuming: a checkpoint every few epochs keeps it fast.
DEMO_CHECKPOINT_EVERY = 5
#: At most about this many epoch lines per task, so the demo's console fits two screens.
DEMO_EPOCH_LINES = 8
DEMO_INTRO = (
    "Every task trained with Ray Train on its embedded dataset, exported with tf2onnx and benchmarked "
    "on ONNX Runtime beside TensorFlow."
)


def run_demo(out: Path, tasks: list[str], workers: int | None = None, epochs: int | None = None) -> Path:
    """Run the whole path for each task into ``out/<task>``; end with one table (per task: score,
    parity, ORT/TF p50 by batch size, HTML report); return the combined report's path.

    ``workers`` and ``epochs`` (``None``: the demo's defaults, ``spec.demo_options`` over the
    task's) apply to every task."""
    from rnnforge.cluster.launch import train
    from rnnforge.cluster.storage import prepare_run_dir
    from rnnforge.export.bench import run_bench
    from rnnforge.export.onnx_export import export_onnx
    from rnnforge.export.report import summary_markdown, summary_table, write_report
    from rnnforge.export.settings import BenchSettings
    from rnnforge.models import get_spec
    from rnnforge.models.resolve import resolve_config

    out = Path(out)
    given = {name: value for name, value in (("workers", workers), ("epochs", epochs)) if value is not None}
    results = {}
    for task in tasks:
        started = time.perf_counter()
        config = resolve_config(
            task, {"checkpoint_every": DEMO_CHECKPOINT_EVERY, **get_spec(task).demo_options, **given}
        )
        _step(f"{task}: training with {config.workers} Ray workers")
        run_dir = prepare_run_dir(out / task, overwrite=True)
        train(config, run_dir, progress_every=math.ceil(config.epochs / DEMO_EPOCH_LINES))
        _step(f"{task}: exporting to ONNX")
        export_onnx(run_dir)
        _step(f"{task}: benchmarking ONNX Runtime vs TensorFlow")
        results[task] = run_bench(run_dir, BenchSettings(warmup=5, max_seconds=2.0))
        _step(f"{task}: done in {time.perf_counter() - started:.0f}s")
    report = out / "report.md"
    write_report(report, summary_markdown(out, results, "rnnforge demo report", DEMO_INTRO), "rnnforge demo report")
    _step("summary (ORT/TF p50 below 1: ONNX Runtime is faster)")
    print(summary_table(results), flush=True)
    return report


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)
