"""``rnnforge bench compare A.json B.json``: ratios between two benchmark results, as a CI gate.

A and B are ``bench.json`` files (one run) or ``bench_all.json`` files (``bench --all``), of schema
version 2, 3 or 4 (``results.READABLE_VERSIONS``). Rows are matched by task, engine, batch size and
sequence length; each ratio is B / A, so for latency below 1 means B is faster and for throughput above 1 means B is faster. ``--metric``
names the gated figure: a row regresses when B is worse than A by more than ``--threshold``
(1.10 = 10 % slower latency or 10 % less throughput).
"""

from __future__ import annotations

import math
from pathlib import Path

from rnnforge.core.errors import UserError
from rnnforge.export.results import load_results, row_key

#: Figures ``--metric`` may gate on, and whether lower is better.
METRICS = {"p50": True, "p90": True, "p95": True, "p99": True, "mean": True, "throughput": False}


def _tf_source(result: dict) -> str:
    """measured, recorded or none (schema 2 always measured TensorFlow in the same run)."""
    tensorflow = result.get("tensorflow")
    return str(tensorflow.get("source", "measured")) if isinstance(tensorflow, dict) else "measured"


def _figure(row: dict, metric: str) -> float:
    return row["throughput_per_s"] if metric == "throughput" else row["latency_ms"][metric]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def checked_rows(path: Path, result: dict) -> dict[tuple, dict]:
    """``{row_key: row}`` of one result's latency rows; a row that lacks a field the table reads,
    or holds one that is not a positive finite number, is refused in one line naming file and row."""
    rows = result.get("latency")
    if not isinstance(rows, list):
        raise UserError(f"{path}: task {result.get('task')!r} has no list of 'latency' rows")
    out = {}
    for index, row in enumerate(rows):
        where = f"{path}: task {result.get('task')!r} latency row {index}"
        if not isinstance(row, dict):
            raise UserError(f"{where} is {type(row).__name__}, not an object")
        if not isinstance(row.get("engine"), str) or not isinstance(row.get("batch_size"), int):
            raise UserError(f"{where} lacks 'engine' (text) or 'batch_size' (integer)")
        latency = row.get("latency_ms")
        if not isinstance(latency, dict):
            raise UserError(f"{where} ({row['engine']}, batch {row['batch_size']}) lacks 'latency_ms'")
        for name in (*(m for m in METRICS if m != "throughput"), "throughput_per_s"):
            value = row.get(name) if name == "throughput_per_s" else latency.get(name)
            if not _positive(value):
                field = name if name == "throughput_per_s" else f"latency_ms.{name}"
                raise UserError(
                    f"{where} ({row['engine']}, batch {row['batch_size']}): {field} is {value!r}, "
                    "expected a positive number"
                )
        out[row_key(row)] = row
    return out


def _provider(result: dict) -> str:
    providers = (result.get("provider") or {}).get("session_providers") or ["?"]
    return str(providers[0])


def compare(a_path: Path, b_path: Path, metric: str = "p50", threshold: float = 1.10) -> tuple[str, list[str]]:
    """The Markdown table of B/A ratios and the rows where ``metric`` regressed beyond ``threshold``."""
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
    if not math.isfinite(threshold) or threshold <= 0:
        raise UserError(f"--threshold {threshold:g}: expected a finite number above 0 (1.10 allows 10 % worse)")
    if threshold < 1.0:
        raise UserError(f"--threshold {threshold:g}: expected at least 1.0 (1.10 allows 10 % worse)")
    from rnnforge.export.load_report import compare_load, is_load_file

    if is_load_file(a_path) or is_load_file(b_path):  # 'bench load' results: the max rate within the SLO
        return compare_load(a_path, b_path, threshold)
    a, b = load_results(a_path), load_results(b_path)
    tasks = [t for t in a if t in b]
    if not tasks:
        raise UserError(f"{a_path} and {b_path} share no task ({', '.join(a)} vs {', '.join(b)})")
    lines = [
        f"A: `{a_path}`  ",
        f"B: `{b_path}`",
        "",
        "| task | engine | batch | len | p50 A ms | p50 B ms | p50 B/A | p99 B/A | samples/s B/A | gate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    regressions, compared = [], 0
    lower_is_better = METRICS[metric]
    for task in tasks:
        rows_a = checked_rows(a_path, a[task])
        rows_b = checked_rows(b_path, b[task])
        compared += len(set(rows_a) & set(rows_b))
        for key in sorted(set(rows_a) & set(rows_b), key=lambda k: (k[0], k[1], k[2] or 0)):
            ra, rb = rows_a[key], rows_b[key]
            worse = (
                (_figure(rb, metric) / _figure(ra, metric))
                if lower_is_better
                else (_figure(ra, metric) / _figure(rb, metric))
            )
            regressed = worse > threshold
            label = f"{task} {key[0]} batch {key[1]}" + (f" len {key[2]}" if key[2] else "")
            if regressed:
                regressions.append(f"{label}: {metric} {worse:.2f}x worse")
            lines.append(
                f"| {task} | {key[0]} | {key[1]} | {key[2] or ''} | {ra['latency_ms']['p50']:.3f} | "
                f"{rb['latency_ms']['p50']:.3f} | {rb['latency_ms']['p50'] / ra['latency_ms']['p50']:.3f} | "
                f"{rb['latency_ms']['p99'] / ra['latency_ms']['p99']:.3f} | "
                f"{rb['throughput_per_s'] / ra['throughput_per_s']:.3f} | "
                + ("REGRESSED" if regressed else "ok")
                + " |"
            )
    if not compared:
        raise UserError(
            f"{a_path} and {b_path} share no row (engine, batch size, length) of task {', '.join(tasks)}: "
            "nothing to compare; bench both with the same --batch-sizes and --variants"
        )
    lines += [
        "",
        f"Gate: {metric}, B at most {threshold:g}x worse than A; "
        + (f"{len(regressions)} row(s) regressed." if regressions else "no regression."),
    ]
    providers = {t: (_provider(a[t]), _provider(b[t])) for t in tasks}
    lines += ["Providers: " + ", ".join(f"{t} {pa} vs {pb}" for t, (pa, pb) in providers.items()) + "."]
    sources = {t: (_tf_source(a[t]), _tf_source(b[t])) for t in tasks}
    if any(pair != ("measured", "measured") for pair in sources.values()):
        lines += ["TensorFlow rows: " + ", ".join(f"{t} {sa} vs {sb}" for t, (sa, sb) in sources.items()) + "."]
    return "\n".join(lines) + "\n", regressions
