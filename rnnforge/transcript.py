"""The README's demo transcript, written from a real ``rnnforge demo`` run, and its shape.

``make transcript`` (``python -m rnnforge.transcript``) runs the demo in a fresh process, shows
its output as it comes, and rewrites the block between the README's two transcript markers with
that output, the machine, its load average and the time taken. ``--from LOG`` takes a captured
console output instead (the machine line then says so). ``tests/test_docs.py`` compares the
block's *shape* (the demo's step lines, each task's epoch count and metric names, the bench rows,
the closing table's columns and rows) with what today's code would print, so a changed default
cannot leave the transcript stale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rnnforge.core import fileio

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- demo transcript: written by `make transcript` from a real `rnnforge demo` run; do not edit -->"
END = "<!-- end of the demo transcript -->"
FENCE = "```"


SETTINGS = "<!-- the demo's settings then: "


def settings(tasks: list[str]) -> dict:
    """Every option each task's demo run trains with (``rnnforge.demo.demo_config``), unset ones left out."""
    from rnnforge.demo import demo_config

    return {task: {k: v for k, v in demo_config(task).to_dict().items() if v is not None} for task in tasks}


def block(readme: str) -> tuple[str, dict, str]:
    """``(the line about the run, the demo's settings then, the console output)`` of the README's
    transcript block."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise ValueError(f"the transcript markers must appear once each ({BEGIN} ... {END})")
    inside = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")
    head, _, rest = inside.partition(f"\n\n{FENCE}\n")
    about, _, recorded = head.partition(f"\n{SETTINGS}")
    return about, json.loads(recorded.removesuffix(" -->") or "{}"), rest.rsplit(f"\n{FENCE}", 1)[0]


def replace_block(readme: str, about: str, recorded: dict, output: str) -> str:
    before, rest = readme.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    return (
        f"{before}{BEGIN}\n{about}\n{SETTINGS}{json.dumps(recorded, sort_keys=True)} -->\n\n"
        f"{FENCE}\n{output.rstrip()}\n{FENCE}\n{END}{after}"
    )


def _paths(line: str) -> str:
    return re.sub(r"[^\s()]+\.(md|html)", "PATH", line)


def _columns(header: str) -> list[str]:
    return re.split(r"\s{2,}", header.strip())


def shape(output: str) -> dict:
    """What a changed default or format shows in the demo's console output, without the figures:
    the step lines (durations as N), per task the first epoch line's ``epoch 1/E`` and metric
    names, the bench rows' (engine, batch), the closing table's columns and first cells, and the
    last line's form."""
    lines = output.splitlines()
    steps = [re.sub(r"done in \d+s$", "done in Ns", line[4:]) for line in lines if line.startswith("==> ")]
    epochs, rows, task = {}, {}, None
    for line in lines:
        if match := re.match(r"==> (\w+): training with", line):
            task = match.group(1)
        elif line.startswith("epoch 1/") and task and task not in epochs:
            words = line.split()
            epochs[task] = [words[1], *(w for w in words[2:] if re.fullmatch(r"[a-z_]+", w))]
        elif match := re.match(r"\s+(\w+) batch\s+(\d+): p50", line):
            rows.setdefault(task, []).append((match.group(1), int(match.group(2))))
    header = next((i for i, line in enumerate(lines) if line.startswith("run ") and "report" in line), None)
    table = [] if header is None else lines[header:]
    return {
        "steps": steps,
        "epochs": epochs,
        "bench_rows": rows,
        "columns": _columns(table[0]) if table else [],
        "table_rows": [line.split()[0] for line in table[1:] if line and not line.startswith("report: ")],
        "last_line": _paths(lines[-1]) if lines else "",
    }


def expected_shape(tasks: list[str], summary_header: str) -> dict:
    """The shape today's code gives ``rnnforge demo --tasks ...`` (``summary_header``: the first
    line of ``export.report.summary_table`` over any results)."""
    from rnnforge.cluster.progress import progress_line
    from rnnforge.demo import STEPS, SUMMARY_STEP, demo_config
    from rnnforge.export.settings import BenchSettings
    from rnnforge.models import get_spec

    steps, epochs, rows = [], {}, {}
    for task in tasks:
        config = demo_config(task)
        steps += [step.format(task=task, workers=config.workers, seconds="N") for step in STEPS]
        metric = get_spec(task).metrics[0]
        entry = {
            "epoch": 1,
            "loss": 0.0,
            metric: 0.0,
            "val_loss": 0.0,
            f"val_{metric}": 0.0,
            "seconds": 1.0,
            "samples_per_s": 1,
            "samples_per_s_per_worker": 1,
        }
        words = progress_line(entry, config.epochs, metric).split()
        epochs[task] = [words[1], *(w for w in words[2:] if re.fullmatch(r"[a-z_]+", w))]
        sizes = BenchSettings().batch_sizes
        rows[task] = [(engine, size) for engine in ("onnxruntime", "tensorflow") for size in sizes]
    return {
        "steps": [*steps, SUMMARY_STEP],
        "epochs": epochs,
        "bench_rows": rows,
        "columns": _columns(summary_header),
        "table_rows": list(tasks),
        "last_line": "report: PATH (HTML: PATH)",  # the CLI's closing line: the report's two copies
    }


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the README's demo transcript from a real demo run.")
    parser.add_argument("--from", dest="log", type=Path, help="a captured 'rnnforge demo' console output")
    parser.add_argument("--out", default="runs/demo", help="the demo's --out (default runs/demo)")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--about", help="with --from: the line saying where, when and under which load it ran")
    args = parser.parse_args(argv)
    from rnnforge.core.machine import machine_info
    from rnnforge.export.results import machine_line

    readme = args.readme.read_text()
    try:
        block(readme)  # the markers are there before the demo's minutes are spent
    except ValueError as exc:
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    if args.log:
        output = args.log.read_text()
        about = (
            args.about or f"Recorded from a captured console output ({args.log.name}); machine and load not recorded."
        )
    else:
        before, started = _load(), time.monotonic()
        command = [sys.executable, "-m", "rnnforge", "demo", "--out", args.out]
        lines = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ}) as demo:
            for line in demo.stdout:
                print(line, end="", flush=True)
                lines.append(line)
        if demo.returncode != 0:
            print(f"error: the demo failed (exit {demo.returncode}); the README is unchanged", file=sys.stderr)
            return demo.returncode
        minutes, seconds = divmod(round(time.monotonic() - started), 60)
        output = "".join(lines)
        about = (
            f"Recorded on {time.strftime('%Y-%m-%d')}: {machine_line(machine_info())}, load average {before} "
            f"before and {_load()} after (1, 5, 15 min); the demo took {minutes} min {seconds:02d} s."
        )
    recorded = settings(shape(output)["table_rows"])
    fileio.write_text(args.readme, replace_block(readme, about, recorded, output))
    print(f"wrote the transcript into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
