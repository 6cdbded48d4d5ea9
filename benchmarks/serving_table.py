"""The serving-capacity table of docs/benchmarks/serving-*.md, from the load.json files committed beside it.

Each file is a ``rnnforge bench load RUN --slo-p99-ms X`` result (``bench/load.json``), copied with
its console transcript; this prints one Markdown row per file: when it ran and how loaded the
machine was, the recommended configuration and rate, the one-at-a-time baseline and the ratio, the
confirming run(s), and how long the search took. Every figure in the document comes from here:
the table is printed under a ``<!-- figures -->`` comment that names, cell by cell, the JSON value
each number is (``tests/test_published_figures.py`` reads them back and compares).

    .venv/bin/python benchmarks/serving_table.py docs/benchmarks/serving-cpu/*.load.json
    .venv/bin/python benchmarks/serving_table.py --points docs/benchmarks/serving-gpu-h200/diag-*.json
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnforge.export.capacity import Config  # noqa: E402


def row(path: Path) -> str:
    result = json.loads(path.read_text(encoding="utf-8"))
    s = result["search"]
    load = result["load_average"]
    base = s["baseline"]
    confirmed = s.get("confirmed") or {}
    tries = [*(f"{r['rate_per_s']:,.0f}/s p99 {r['p99_ms']:,.1f} ms" for r in s.get("refuted", []))]
    if confirmed:
        tries.append(
            f"{confirmed['rate_per_s']:,.0f}/s p99 {confirmed['p99_ms']:,.1f} ms "
            + ("**held**" if confirmed["within_slo"] else "missed")
        )
    ratio = f"{s['over_baseline']:.1f}x" if s.get("over_baseline") else "- (baseline held no rate)"
    return (
        f"| {path.name.split('.')[0]} | {load['before'][0]:.1f} / {load['after'][0]:.1f} | {s['slo_p99_ms']:g} | "
        f"{Config(**s['settings']).label()} | {s.get('search_rate_per_s', s['rate_per_s']):,.0f} | "
        f"{Config(**base['settings']).label()}: {base['rate_per_s']:,.0f} | {ratio} | {'; '.join(tries)} | "
        f"{s['search_seconds']:.0f} s |"
        + (
            f" {s['noise_floor_p99_ms']['before']:.1f} / {s['noise_floor_p99_ms']['after']:.1f} |"
            if s.get("noise_floor_p99_ms")
            else " - |"
        )
    )


SETTINGS = ("threads", "instances", "max_batch", "queue_delay_ms")


def figures(path: Path) -> list[str]:
    """The declaration lines of ``row(path)``'s numbers: ``RUN | COLUMN = @RUN:json.path ; ...``."""
    result = json.loads(path.read_text(encoding="utf-8"))
    s, run = result["search"], path.name.split(".")[0]

    def at(*keys: str) -> str:
        return " ; ".join(f"@{run}:{key}" for key in keys)

    tries = [f"search.refuted.{i}.{k}" for i in range(len(s.get("refuted", []))) for k in ("rate_per_s", "p99_ms")]
    if s.get("confirmed"):
        tries += ["search.confirmed.rate_per_s", "search.confirmed.p99_ms"]
    cells = {
        "load average before / after": at("load_average.before.0", "load_average.after.0"),
        "SLO p99 ms": at("search.slo_p99_ms"),
        "recommended": at(*(f"search.settings.{k}" for k in SETTINGS)),
        "its rate /s (search)": at("search.search_rate_per_s" if "search_rate_per_s" in s else "search.rate_per_s"),
        "one at a time /s": at(*(f"search.baseline.settings.{k}" for k in SETTINGS), "search.baseline.rate_per_s"),
        "ratio": at("search.over_baseline") if s.get("over_baseline") else "",
        "confirming runs": at(*tries),
        "search": at("search.search_seconds"),
        "empty server's p99 ms before / after": (
            at("search.noise_floor_p99_ms.before", "search.noise_floor_p99_ms.after")
            if s.get("noise_floor_p99_ms")
            else ""
        ),
    }
    return [f"{run}: {path.parent.name}/{path.name}"] + [f"{run} | {c} = {e}" for c, e in cells.items() if e]


POINT_CELLS = {
    "answered /s": "throughput_per_s",
    "p50 ms": "latency_ms.p50",
    "p99 ms": "latency_ms.p99",
    "compute p50 / p90 / p99 ms": ("compute_ms.p50", "compute_ms.p90", "compute_ms.p99"),
    "mean batch": "mean_batch",
}


def point_rows(paths: list[str]) -> list[str]:
    """``--points``: one row per measured point of plain load tests (``bench load --request-rate``),
    under its own ``<!-- figures -->`` declarations; a row is ``FILE @ OFFERED/s``."""
    declared, rows = ["<!-- figures", "keys: run @ offered"], []
    for path in map(Path, sorted(paths)):
        result = json.loads(path.read_text(encoding="utf-8"))
        run = path.name.removesuffix(".json")
        declared.append(f"{run}: {path.parent.name}/{path.name}")
        for i, point in enumerate(result["points"]):
            label = f"{run} @ {point['offered']:.0f}/s"
            cells = []
            for column, keys in POINT_CELLS.items():
                keys = (keys,) if isinstance(keys, str) else keys
                declared.append(f"{label} | {column} = " + " ; ".join(f"@{run}:points.{i}.{k}" for k in keys))
                values = [functools.reduce(lambda d, part: d[part], k.split("."), point) for k in keys]
                cells.append(" / ".join(f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in values))
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    header = "| run @ offered | " + " | ".join(POINT_CELLS) + " |"
    return [*declared, "-->", header, "|---|" + "---:|" * len(POINT_CELLS), *rows]


def main(paths: list[str]) -> int:
    if paths[:1] == ["--points"]:
        print("\n".join(point_rows(paths[1:])))
        return 0
    print("<!-- figures\nkeys: run (time)")
    for path in sorted(paths):
        print("\n".join(figures(Path(path))))
    print("-->")
    print(
        "| run (time) | load average before / after | SLO p99 ms | recommended | its rate /s (search) | "
        "one at a time /s | ratio | confirming runs | search | empty server's p99 ms before / after |"
    )
    print("|---|---|---:|---|---:|---|---:|---|---|---|")
    for path in sorted(paths):
        print(row(Path(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
