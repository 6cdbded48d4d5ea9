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


#: The demo's bench: fewer warm-ups and at most 2 s a row, so every task's bench takes seconds.
DEMO_BENCH = {"warmup": 5, "max_seconds": 2.0}
DEMO_TITLE = "rnnforge demo report"
#: The lines (after ``==> ``) that mark each task's steps on the console.
STEPS = (
    "{task}: training with {workers} Ray workers",
    "{task}: exporting to ONNX",
    "{task}: benchmarking ONNX Runtime vs TensorFlow",
    "{task}: done in {seconds}s",
)
SUMMARY_STEP = "summary (ORT/TF p50 below 1: ONNX Runtime is faster)"


def demo_config(task: str, workers: int | None = None, epochs: int | None = None):
    """The ``TrainConfig`` the demo trains ``task`` with: the task's defaults, its
    ``spec.demo_options``, a checkpoint every few epochs, and ``workers``/``epochs`` when given."""
    from rnnforge.models import get_spec
    from rnnforge.models.resolve import resolve_config

    given = {name: value for name, value in (("workers", workers), ("epochs", epochs)) if value is not None}
    return resolve_config(task, {"checkpoint_every": DEMO_CHECKPOINT_EVERY, **get_spec(task).demo_options, **given})


def run_demo(out: Path, tasks: list[str], workers: int | None = None, epochs: int | None = None) -> Path:
    """Run the whole path for each task into ``out/<task>``; end with one table (per task: score,
    parity, ORT/TF p50 by batch size, HTML report); return the combined report's path.

    ``workers`` and ``epochs`` (``None``: the demo's defaults, ``spec.demo_options`` over the
    task's) apply to every task."""
    from rnnforge.cluster.launch import train
    from rnnforge.cluster.storage import prepare_run_dir
    from rnnforge.export.bench import run_bench
    from rnnforge.export.onnx_export import export_onnx
    from rnnforge.export.settings import BenchSettings

    out = Path(out)
    results = {}
    for task in tasks:
        started = time.perf_counter()
        config = demo_config(task, workers, epochs)
        _step(STEPS[0].format(task=task, workers=config.workers))
        run_dir = prepare_run_dir(out / task, overwrite=True)
        train(config, run_dir, progress_every=math.ceil(config.epochs / DEMO_EPOCH_LINES))
        _step(STEPS[1].format(task=task))
        export_onnx(run_dir)
        _step(STEPS[2].format(task=task))
        results[task] = run_bench(run_dir, BenchSettings(**DEMO_BENCH))
        _step(STEPS[3].format(task=task, seconds=f"{time.perf_counter() - started:.0f}"))
    return write_summary(out, results)


def write_summary(out: Path, results: dict[str, dict]) -> Path:
    """The demo's ending: ``out/report.md`` and ``report.html`` over every task's bench result,
    then the console's closing table; returns the report's path."""
    from rnnforge.export.report import summary_markdown, summary_table, write_report

    report = Path(out) / "report.md"
    write_report(report, summary_markdown(Path(out), results, DEMO_TITLE, DEMO_INTRO), DEMO_TITLE)
    _step(SUMMARY_STEP)
    print(summary_table(results), flush=True)
    return report


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)
