"""The serving-capacity table of docs/benchmarks/serving-cpu.md, from its committed load.json files.

Each file is a ``rnnforge bench load RUN --slo-p99-ms X`` result (``bench/load.json``), copied with
its console transcript; this prints one Markdown row per file: when it ran and how loaded the
machine was, the recommended configuration and rate, the one-at-a-time baseline and the ratio, the
confirming run(s), and how long the search took. Every figure in the document comes from here.

    .venv/bin/python benchmarks/serving_table.py docs/benchmarks/serving-cpu/*.load.json
"""

from __future__ import annotations

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


def main(paths: list[str]) -> int:
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
