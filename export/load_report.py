"""The serving-capacity section: ``bench/load.md`` on its own, and inside ``bench/report.md``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rnnforge.core.errors import UserError
from rnnforge.core.run_dir import RunDir
from rnnforge.core.run_files import read_json
from rnnforge.export.capacity import Config
from rnnforge.export.results import machine_line


def load_markdown(result: dict, run: RunDir) -> str:
    """``bench/load.md``: the load test's page."""
    return "\n".join(
        [
            f"# rnnforge serving capacity: {result['task']}",
            "",
            f"- run: `{result['run_dir']}`",
            f"- machine: {machine_line(result['machine'])}",
            "",
            *serving_lines(result),
        ]
    )


def serving_section(run: RunDir) -> list[str]:
    """The section ``bench/report.md`` shows when ``bench load`` wrote ``bench/load.json``."""
    path = run.bench / "load.json"
    if not path.is_file():
        return []
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        return serving_lines(result)
    except (OSError, ValueError, KeyError, TypeError):
        return []


def serving_lines(result: dict) -> list[str]:
    load = result.get("load_average") or {}
    before, after = (load.get("before") or [None])[0], (load.get("after") or [None])[0]
    lines = [
        "## Serving capacity (load test)",
        "",
        "Each request is one stored evaluation example, sent to ONNX Runtime sessions (instances) behind a "
        "dynamic batcher, every instance on its own thread in one process. Open loop: Poisson arrivals, "
        f"latency from each request's scheduled send time (no coordinated omission). {result['rule']['stability']}."
        + (
            f" Load average {before:.1f} before, {after:.1f} after: other work on this machine slows every figure."
            if before is not None and after is not None
            else ""
        ),
        "",
    ]
    gpu = result.get("gpu_memory_bytes")
    lines += [
        "ONNX Runtime device memory: "
        + (_mb(gpu) if gpu else "not applicable (CPU)" if _on_cpu(result) else "not reported (no nvidia-smi answer)")
        + f"; the load generator holds the eval inputs ({_mb(result.get('eval_inputs_bytes'))}) in the same process.",
        "",
    ]
    search = result.get("search")
    if search:
        lines += _search_lines(search)
    else:
        lines += [f"Configuration: {Config(**result['config']).label()}.", ""]
    lines += _points_table(result)
    lines += ["", "![Latency vs rate](load_vs_rate.png)", ""]
    return lines


def _search_lines(s: dict) -> list[str]:
    confirmed = s.get("confirmed")
    base = s["baseline"]
    lines = [
        f"**Recommended** for p99 <= {s['slo_p99_ms']:g} ms: {Config(**s['settings']).label()}: "
        f"**{s['rate_per_s']:,.0f} requests/s** (p50 {_ms(s['p50_ms'])}, p99 {_ms(s['p99_ms'])} ms, mean batch "
        f"{s['mean_batch'] or 0:.1f}, peak RSS {_mb(s['peak_rss_bytes'])}).",
        "",
        f"One request at a time ({Config(**base['settings']).label()}): {base['rate_per_s']:,.0f} requests/s"
        + (f"; the recommendation takes {s['over_baseline']:.1f}x that." if s.get("over_baseline") else "."),
        "",
    ]
    for refuted in s.get("refuted") or []:
        # "missed": why (serving.json written before it was recorded: only the p99)
        missed = refuted.get("missed") or f"p99 {_ms(refuted['p99_ms'])} ms"
        lines += [
            f"A confirming run at {refuted['rate_per_s']:,.0f} requests/s did not hold ({missed}): the next "
            "ran at 80 % of that rate.",
            "",
        ]
    if confirmed:
        lines += [
            f"Confirming run at {confirmed['rate_per_s']:,.0f} requests/s: p50 {_ms(confirmed['p50_ms'])} ms, p99 "
            f"{_ms(confirmed['p99_ms'])} ms over {confirmed['windows']} windows "
            + ("(stable): " if confirmed["stable"] else "(not stable): ")
            + (
                "**within the SLO**."
                if confirmed["within_slo"]
                else f"**NOT sustained** ({confirmed.get('missed') or 'p99 over the SLO'}): treat the rate as optimistic."
            ),
            "",
        ]
    floor = s.get("noise_floor_p99_ms")
    if floor:
        lines += [
            f"Noise floor: a server that answers at once had p99 {floor['before']:.2f} ms before the search and "
            f"{floor['after']:.2f} ms after it on this machine; an SLO near those figures measures the machine.",
            "",
        ]
    lines += [
        f"Search: {s['search_seconds']:.0f} s; {s.get('configurations_measured', len(s['runner_ups']) + 1)} "
        f"configurations measured (the best {len(s['runner_ups']) + 1} below); skipped: "
        f"{sum(k['why'] == 'dominated' for k in s['skipped'])} dominated (their ceiling below a rate already "
        f"sustained), {sum(k['why'] == 'time limit' for k in s['skipped'])} for the time limit.",
        "",
        "| configuration | max rate within SLO /s | p50 ms | p99 ms | mean batch | ceiling /s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for point in [s | {"settings": s["settings"]}, *s["runner_ups"]]:
        lines.append(
            f"| {Config(**point['settings']).label()} | {point['rate_per_s']:,.0f} | {_ms(point['p50_ms'])} | "
            f"{_ms(point['p99_ms'])} | {point['mean_batch'] or 0:.1f} | {point['ceiling_per_s'] or 0:,.0f} |"
        )
    return lines + [""]


def _points_table(result: dict) -> list[str]:
    if "search" in result:
        return []
    lines = [
        "| loop | offered | answered /s | p50 ms | p99 ms | queue p99 ms | compute p50 ms | batches that ran | "
        "stable | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for p in result["points"]:
        offered = f"{p['offered']:,.0f}/s" if p["mode"] == "open" else f"{p['offered']:g} clients"
        sizes = ", ".join(f"{n}x{b}" for b, n in p["batch_sizes"].items())
        lines.append(
            f"| {p['mode']} | {offered} | {p['throughput_per_s']:,.0f} | {_ms(p['latency_ms']['p50'])} | "
            f"{_ms(p['latency_ms']['p99'])} | {_ms(p['queue_ms']['p99'])} | {_ms(p['compute_ms']['p50'])} | {sizes} | "
            f"{'yes' if p['stable'] else 'no'} | {_mb(p.get('peak_rss_bytes'))} |"
        )
    return lines


def _on_cpu(result: dict) -> bool:
    settings = (result.get("search") or {}).get("settings") or result.get("config") or {}
    return settings.get("provider", "cpu") == "cpu"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mb(value) -> str:
    return "-" if not value else f"{value / 2**20:,.0f} MiB"


# --- bench compare on load results ----------------------------------------------------------------


def is_load_file(path: Path) -> bool:
    """Whether ``path`` holds a ``bench load`` result (load.json or serving.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") in ("load", "serving")


def max_rate(path: Path) -> dict:
    """The max rate within the SLO a load.json (with a search) or serving.json records, with its
    SLO, settings and task; one-line errors otherwise."""
    data = read_json(Path(path), hint="expected a load.json or serving.json of 'rnnforge bench load'")
    search = data.get("search") if isinstance(data, dict) and data.get("kind") == "load" else data
    if not isinstance(search, dict) or "rate_per_s" not in search or "slo_p99_ms" not in search:
        raise UserError(
            f"{path} holds no search result (no max rate within an SLO): compare files written by "
            "'rnnforge bench load RUN --slo-p99-ms X'"
        )
    rate = search["rate_per_s"]
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate < 0:
        raise UserError(f"{path}: rate_per_s is {rate!r}, expected a number of requests/s")
    return {
        "task": data.get("task"),
        "rate": float(rate),
        "slo": search["slo_p99_ms"],
        "settings": search.get("settings") or {},
        "confirmed": (search.get("confirmed") or {}).get("within_slo"),
    }


def compare_load(a_path: Path, b_path: Path, threshold: float) -> tuple[str, list[str]]:
    """``bench compare`` of two load results: B/A of the max rate within the SLO; a regression is
    B below A / ``threshold``."""
    a, b = max_rate(a_path), max_rate(b_path)
    if a["task"] != b["task"]:
        raise UserError(f"{a_path} is task {a['task']!r}, {b_path} is {b['task']!r}: nothing to compare")
    if a["slo"] != b["slo"]:
        raise UserError(
            f"{a_path} searched within p99 {a['slo']:g} ms, {b_path} within {b['slo']:g} ms: compare searches "
            "with the same --slo-p99-ms"
        )
    ratio = b["rate"] / a["rate"] if a["rate"] else (1.0 if not b["rate"] else math.inf)
    regressed = ratio < 1 / threshold
    regressions = [f"{a['task']} max rate within p99 {a['slo']:g} ms: {1 / ratio if ratio else math.inf:.2f}x lower"]
    lines = [
        f"A: `{a_path}`  ",
        f"B: `{b_path}`",
        "",
        "| task | SLO p99 ms | max rate A /s | max rate B /s | B/A | settings A | settings B | gate |",
        "|---|---:|---:|---:|---:|---|---|---|",
        f"| {a['task']} | {a['slo']:g} | {a['rate']:,.0f} | {b['rate']:,.0f} | {ratio:.3f} | "
        f"{_label(a['settings'])} | {_label(b['settings'])} | {'REGRESSED' if regressed else 'ok'} |",
        "",
        f"Gate: max rate within the SLO, B at least A / {threshold:g}; "
        + ("1 row regressed." if regressed else "no regression."),
    ]
    unconfirmed = [p for p, r in ((a_path, a), (b_path, b)) if r["confirmed"] is False]
    if unconfirmed:
        lines.append("Not confirmed by their second run: " + ", ".join(f"`{p}`" for p in unconfirmed) + ".")
    return "\n".join(lines) + "\n", regressions if regressed else []


def _label(settings: dict) -> str:
    try:
        return Config(**settings).label()
    except TypeError:
        return "?"


def serving_summary(results: dict[str, dict]) -> list[str]:
    """Lines for a summary report (the demo's, ``bench --all``'s): each run's recommended serving
    configuration, where ``bench load --slo-p99-ms`` wrote one."""
    lines = []
    for name, result in results.items():
        path = Path(result.get("run_dir", "")) / "bench" / "serving.json"
        if not path.is_file():
            continue
        try:
            s = json.loads(path.read_text(encoding="utf-8"))
            confirmed = (s.get("confirmed") or {}).get("within_slo")
            lines.append(
                f"- {name}: {s['rate_per_s']:,.0f} requests/s within p99 {s['slo_p99_ms']:g} ms with "
                f"{Config(**s['settings']).label()}"
                + (f" ({s['over_baseline']:.1f}x one at a time)" if s.get("over_baseline") else "")
                + ("" if confirmed else "; not confirmed by its second run")
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return ["Serving capacity (`bench load --slo-p99-ms`, `bench/serving.json`):", "", *lines, ""] if lines else []
