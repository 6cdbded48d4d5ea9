"""Scaling figures: plain single-process ``model.fit`` vs ``rnnforge train`` on Ray with 1 and 2 workers.

Every row trains the same task on the same data for the same epochs, with the same per-worker
batch; each runs in a fresh process and is timed end to end. The plain process and the 1-worker
run use every core; the 2 workers split them. Ray runs its workers at niceness 15, so the plain
process does too: on a machine shared with other work every row then competes alike (on an idle
machine niceness changes nothing). Figures, not a test:

    .venv/bin/python benchmarks/scaling.py --epochs 5      # the table in docs/scaling.md

Columns: end to end (process start to exit), start-up (process start until the workers enter
``fit``), ``fit``, the part of ``fit`` spent saving per-epoch checkpoints, and samples/s over the
epochs after the first (the first one traces the graph).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnforge.core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RAY_WORKER_NICENESS = 15  # Ray's default worker_niceness
sys.path.insert(0, str(ROOT))


def plain_fit(config: TrainConfig) -> dict:
    """One process, no Ray: the Ray worker's own fit (``cluster.fit``) under the default strategy."""
    started_at = time.time()
    from tensorflow import keras

    from rnnforge.cluster.fit import batches, fit, prepare

    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.began)

    run = prepare(config)
    train, valid = batches(run)
    fit_started_at = time.time()
    fit(run, train, valid, callbacks=[Timer()])
    fit_s = time.time() - fit_started_at
    return {
        "samples": [run.steps * run.global_batch / s for s in seconds],
        "timing": {"until_fit_s": fit_started_at - started_at, "fit_s": fit_s, "checkpoint_s": 0.0},
    }


def run_row(args: argparse.Namespace, workers: int | None, work: Path) -> dict:
    """One row in a fresh process: ``workers=None`` is the plain process."""
    from rnnforge.core.machine import local_cpus

    cores = local_cpus()  # as the local Ray counts them (a container's limit included)
    options = ["--epochs", str(args.epochs), *args.train_args.split(), "--patience", "0"]
    if workers is None:  # one worker's batch: --batch-size, as each Ray worker's
        command = [sys.executable, __file__, "--plain", args.task, *options, "--workers", "1"]
    else:
        command = [
            sys.executable,
            "-m",
            "rnnforge.cli",
            "train",
            args.task,
            *options,
            "--workers",
            str(workers),
            "--cpus-per-worker",
            str(max(1, cores // workers)),
            "--run-dir",
            str(work / f"ray{workers}"),
            "--overwrite",
        ]
    began = time.perf_counter()
    nice = (lambda: os.nice(RAY_WORKER_NICENESS)) if workers is None else None
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, preexec_fn=nice)
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    if workers is None:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        metrics = json.loads((work / f"ray{workers}" / "metrics.json").read_text())
        result = {"samples": [h["samples_per_s"] for h in metrics["history"]], "timing": metrics["timing"]}
    steady = result["samples"][1:] or result["samples"]
    return {
        "row": "plain model.fit" if workers is None else f"Ray Train, {workers} worker{'s' * (workers > 1)}",
        "wall_s": wall,
        "samples_per_s": sum(steady) / len(steady),
        **result["timing"],
    }


def table(rows: list[dict]) -> str:
    plain = rows[0]
    lines = [
        "| run | end to end s | start-up s | fit s | checkpoints s | samples/s | samples/s vs plain | time vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['wall_s']:.1f} | {r['until_fit_s']:.1f} | {r['fit_s']:.1f} | "
            f"{r['checkpoint_s']:.1f} | {r['samples_per_s']:.0f} | {r['samples_per_s'] / plain['samples_per_s']:.2f}x | "
            f"{r['wall_s'] / plain['wall_s']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sketch")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all rows, interleaved; the table shows medians"
    )
    parser.add_argument(
        "--train-args", default="", help="more 'rnnforge train' options for every row, e.g. '--units 64'"
    )
    parser.add_argument("--plain", metavar="TASK", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.plain:  # the child process of the plain row: rnnforge's own option parsing, then fit
        from rnnforge.cli import parse_train_args

        print(json.dumps(plain_fit(parse_train_args([args.plain, "--epochs", str(args.epochs), *rest]))))
        return
    from rnnforge.core.machine import machine_info

    with tempfile.TemporaryDirectory(prefix="rnnforge-scaling-") as work:
        rounds = [[run_row(args, workers, Path(work)) for workers in (None, 1, 2)] for _ in range(args.repeat)]
    rows = [
        {"row": runs[0]["row"], **{k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "row"}}
        for runs in zip(*rounds)
    ]
    machine = machine_info()
    text = (
        f"{args.task}, {args.epochs} epochs, median of {args.repeat} round(s){', ' + args.train_args if args.train_args else ''}; "
        f"{machine['cpu']}, {machine['logical_cores']} cores\n\n{table(rows)}\n\n"
        + "\n".join(
            f"- {r['row']}: {json.dumps({k: round(v, 1) for k, v in r.items() if k.endswith('_s')})}" for r in rows
        )
        + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
