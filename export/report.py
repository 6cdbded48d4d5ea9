"""Reports: one per bench run (``bench/report.md`` and its HTML copy), one over a demo's tasks
(whose HTML copy links each task's ``report.html``), and the console's closing table."""

from __future__ import annotations

import os
from pathlib import Path

from rnnforge.core import fileio
from rnnforge.core.errors import UserError
from rnnforge.core.run_dir import RunDir
from rnnforge.core.run_files import read_json, read_metrics
from rnnforge.core.scores import format_scores, format_value, headline
from rnnforge.export.load_report import serving_section, serving_summary
from rnnforge.export.parity import describe_top1
from rnnforge.export.results import machine_line, p50_index


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def bench_markdown(result: dict, run: RunDir) -> str:
    """The report a user reads before shipping: model, training, parity, accuracy, latency."""
    lines = _header(result)
    lines += provenance_block(result)
    lines += _training(run)
    lines += _parity_lines(result.get("parity"))
    lines += _accuracy(result["accuracy"], result.get("eval"), _units(run))
    lines += _latency(result)
    lines += serving_section(run)  # written by 'bench load', when it ran
    if run.architecture.is_file():
        lines += [
            "## Architecture",
            "",
            "```",
            run.architecture.read_text(encoding="utf-8", errors="replace").rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def _header(result: dict) -> list[str]:
    provider = result["provider"]
    return [
        f"# rnnforge report: {result['task']}",
        "",
        f"- run: `{result['run_dir']}`",
        "- ONNX models: " + ", ".join(f"{v} `{path}`" for v, path in result["onnx_models"].items()),
        *([f"- **model from another run:** {result['model_note']}"] if result.get("model_note") else []),
        f"- machine: {machine_line(result['machine'])}",
        f"- ONNX Runtime providers: requested `{provider['requested']}`, session used "
        f"`{', '.join(provider['session_providers'])}`; intra-op threads {provider['intra_op_threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]


def _training(run: RunDir) -> list[str]:
    if not run.metrics.is_file():
        return []
    metrics = read_metrics(run.metrics)  # checked before the bench began (bench.load_target)
    split = "test" if metrics.get("test", {}).get("examples") else "valid"
    lines = [
        "## Training",
        "",
        f"{metrics['epochs_run']} epochs on `{metrics['dataset']}` with {metrics['workers']} Ray workers in "
        f"{metrics['train_seconds']} s ({metrics['samples_per_s']} samples/s, {metrics['samples_per_s_per_worker']} "
        f"per worker), {metrics['restarts']} restart(s). {split.capitalize()} split: "
        + format_scores(metrics[split])
        + ("" if split == "test" else " (the test split is empty)")
        + ".",
        "",
    ]
    for name in metrics.get("companions", []):  # a distilled forecaster's ensemble (its teacher), side by side
        lines += [
            f"Beside it, the run's `{name}` (`model.{name}.onnx`, bench `--variants {name}`), {split} split: "
            + format_scores(metrics[name][split])
            + ".",
            "",
        ]
    for line in metrics.get("warnings", []):  # e.g. a classifier that ended at chance
        lines += [f"**{line}**", ""]
    if metrics.get("devices"):
        lines += ["What each worker trained on:", "", *device_table(metrics["devices"]), ""]
    for png, title in (
        ("training_curve.png", "Training curve"),
        ("confusion_matrix.png", "Confusion matrix"),
        ("forecast.png", "Forecast vs actual"),
        ("mae_per_horizon.png", "MAE per horizon day"),
    ):
        if (run.path / png).is_file():
            lines += [f"![{title}]({_rel(run.path / png, run.bench)})", ""]
    return lines


def device_table(records: list[dict]) -> list[str]:
    """Markdown rows, one per rank: what each worker trained on."""
    lines = [
        "| rank | host | GPUs assigned by Ray | GPUs TensorFlow sees | strategy | all-reduce | mixed precision |",
        "|---:|---|---|---|---|---|---|",
    ]
    for r in records:
        seen = ", ".join(r["tensorflow_gpus"]) or ("none: trained on the CPU" if r.get("cpu_fallback") else "none")
        lines.append(
            f"| {r['rank']} | {r['host']} | {', '.join(r['assigned_gpus']) or 'none'} | {seen} | "
            f"{r.get('strategy', '')} | {r.get('all_reduce', '')} | {'on' if r['mixed_precision'] else 'off'} |"
        )
    return lines


def _parity_lines(parity: dict | None) -> list[str]:
    if not parity:
        return []
    lines = ["## Parity (export)", ""]
    for label, record in (("fp32", parity), ("fp16", parity.get("fp16")), ("ensemble", parity.get("ensemble"))):
        if not record:
            continue
        agreement = _top1(record, ", top-1 agreement ")
        kept = f"; {len(record['nodes_kept_fp32'])} nodes kept in fp32" if "nodes_kept_fp32" in record else ""
        if record.get("fused_members"):
            kept += f"; {record['fused_members']} members fused into {record['recurrent_nodes']} recurrent nodes"
        lines.append(
            f"- {label}: opset {parity['opset']}, {record['nodes']} nodes{kept}; on {record['batch']} "
            f"{parity.get('split', 'test')} examples: max abs diff {record['max_abs_diff']:.2e} "
            f"(tolerance {record['atol']:g}){agreement}."
        )
    int8 = parity.get("int8")
    if int8:
        gate = "; ".join(line.split("] ", 1)[-1] for line in int8["checks"])
        lines.append(
            f"- int8: static {', '.join(int8['recipe']['static_ops']) or 'none'}, dynamic "
            f"{', '.join(int8['recipe']['dynamic_ops']) or 'none'} ({int8['calibration']['note']}); "
            f"{int8['nodes']} nodes; accuracy gate on {_held_out(int8)}: {gate}."
        )
    return lines + [""]


def _units(run: RunDir) -> str | None:
    """The forecaster's value units (``riders per day``) from the run's config.json, if it says
    (bench checked the file before any work; a report of an older run may lack them)."""
    try:
        units = read_json(run.config).get("info", {}).get("units")
    except (UserError, AttributeError):
        return None
    return units if isinstance(units, str) and units else None


def _accuracy(accuracy: dict, stored: dict | None, units: str | None = None) -> list[str]:
    engines = ["tensorflow", *accuracy["agreement_by_engine"]]
    score_keys = list(headline(accuracy["tensorflow"]))
    of_split = ""
    if stored:
        whole = stored["examples_in_split"] == accuracy["examples"]
        of_split = " (the whole split)" if whole else f" of the split's {stored['examples_in_split']}, evenly spaced"
    lines = [
        f"## Accuracy on the {accuracy['split']} split",
        "",
        f"{accuracy['examples']} examples{of_split}, stored by `export onnx` (`eval.npz`) with TensorFlow's "
        "outputs on them: the TensorFlow row scores those outputs. Deltas are the engine's score minus TensorFlow's."
        + (f" MAE in {units}, MAPE in %." if units else ""),
        "",
        "| engine | " + " | ".join(score_keys) + " | max abs diff vs TF | top-1 agreement |",
        "|---|" + "---:|" * (len(score_keys) + 2),
    ]
    for engine in engines:
        agreement = accuracy["agreement_by_engine"].get(engine, {})
        delta = accuracy["delta_vs_tensorflow"].get(engine, {})
        cells = [format_value(accuracy[engine][k]) + (f" ({delta[k]:+.4f})" if k in delta else "") for k in score_keys]
        diff = f"{agreement['max_abs_diff']:.2e}" if agreement else ""
        top1 = _top1(agreement)
        lines.append(f"| {engine} | " + " | ".join(cells) + f" | {diff} | {top1} |")
    return lines + _horizon_days(accuracy.get("onnxruntime") or accuracy[engines[1]]) + _intervals(accuracy)


def _intervals(accuracy: dict) -> list[str]:
    """A quantile forecaster's interval scores (``every_output``): pinball loss per level, and per
    horizon day the coverage and width of each central interval against its nominal share."""
    every = accuracy.get("every_output") or {}
    nominal = sorted(k.removeprefix("nominal_") for k in every if k.startswith("nominal_"))
    if not nominal:
        return []
    pinball = ", ".join(f"{k.removeprefix('pinball_')} {every[k]:,.1f}" for k in every if k.startswith("pinball_p"))
    days = sorted({k.split("_d+")[1] for k in every if k.startswith("coverage_") and "_d+" in k}, key=int)
    lines = [
        "",
        f"Intervals ({every['engine']}, every output): pinball loss {pinball}. Coverage is the share of "
        "true values inside the interval; it should be near the nominal share.",
        "",
        "| interval (nominal) | all days | " + " | ".join(f"d+{d}" for d in days) + " |",
        "|---|---:|" + "---:|" * len(days),
    ]
    for name in nominal:
        label = f"{name.replace('_', '-').upper()} ({every['nominal_' + name]:.0%})"
        for key, fmt in ((f"coverage_{name}", "{:.1%}"), (f"width_{name}", "{:,.0f}")):
            cells = [fmt.format(every[key]), *(fmt.format(every[f"{key}_d+{d}"]) for d in days)]
            lines.append(f"| {label} {key.split('_')[0]} | " + " | ".join(cells) + " |")
    return lines


def _held_out(int8: dict) -> str:
    """The int8 gate's examples: "3,838 held-out examples (240 test, 240 valid, 3,358 drawn)"."""
    sources = int8.get("held_out")
    if not sources:
        return f"{int8['examples']} {int8['split']} examples"
    return f"{int8['examples']:,} held-out examples (" + ", ".join(f"{n:,} {s}" for s, n in sources.items()) + ")"


def _top1(record: dict, prefix: str = "") -> str:
    """A record's top-1 agreement with its 95 % lower bound (and verdict, where it is gated);
    the bare rate for results written before bounds were recorded; empty without one."""
    if "top1_agreed" in record:
        return prefix + describe_top1(record)
    return f"{prefix}{record['top1_agreement']:.4f}" if "top1_agreement" in record else ""


def _horizon_days(scores: dict) -> list[str]:
    """The forecaster's per-day MAE/MAPE table (ONNX Runtime's scores), empty for classifiers."""
    per_day = sorted(k for k in scores if k.startswith("mae_d+"))
    if not per_day:
        return []
    lines = ["", "| horizon day | " + " | ".join(k[4:] for k in per_day) + " |", "|---|" + "---:|" * len(per_day)]
    for label, prefix in (("model MAE (ORT)", "mae_"), ("naive MAE", "naive_mae_"), ("model MAPE % (ORT)", "mape_")):
        lines.append(f"| {label} | " + " | ".join(f"{scores[prefix + k[4:]]:,.1f}" for k in per_day) + " |")
    return lines


def _latency(result: dict) -> list[str]:
    settings, provider = result["settings"], result["provider"]
    sessions = "; ".join(
        f"{v}: session creation {s['session_creation_ms']:.1f} ms, first inference {s['first_inference_ms']:.2f} ms"
        for v, s in result["sessions"].items()
    )
    tensorflow = result.get("tensorflow", {"source": "measured", "note": ""})
    lines = [
        "",
        "## Latency",
        "",
        SINGLE_STREAM,
        "",
        f"{sessions}. {_timing_rule(settings, result['latency'])} Each engine ran in its own process, one after "
        f"the other, on the same inputs with {provider['intra_op_threads']} intra-op thread(s)."
        + (
            " ONNX Runtime inputs and outputs are bound on the device (IOBinding): host-device copies are not timed."
            if provider["io_binding"]
            else ""
        ),
        "",
        INTERVALS,
        "",
        _tensorflow_line(tensorflow),
        "",
    ]
    full = [r for r in result["latency"] if r["seq_len"] is None]
    lines += _latency_table(full)
    lines += ["", "| engine | SingleStream p90 ms (batch 1) | Offline samples/s (batch) |", "|---|---:|---:|"]
    batch_one = {r["engine"]: r for r in full if r["batch_size"] == 1}
    for engine, figures in result["scenarios"].items():
        single = figures["single_stream_p90_ms"]
        cell = "" if single is None else f"{single:.3f}"
        if engine in batch_one and single is not None:
            cell = percentile_cell(batch_one[engine], "p90")
        lines.append(
            f"| {engine} | {cell} | {figures['offline_samples_per_s']:,.0f} ({figures['offline_batch_size']}) |"
        )
    lines += [
        "",
        "![Latency vs batch size](latency_vs_batch.png)",
        "",
        "![Throughput vs latency](throughput_vs_latency.png)",
    ]
    lines += ["", "![Latency distribution](latency_distribution.png)", ""]
    swept = [r for r in result["latency"] if r["seq_len"] is not None]
    if swept:
        lines += ["### By sequence length", "", *_latency_table(swept)]
        lines += ["", "![Latency vs sequence length](latency_vs_seq_len.png)", ""]
    return lines


#: What every bench report says it measured, and where capacity is measured instead.
SINGLE_STREAM = (
    "**Single-stream**: one closed-loop client, each call started when the previous one returned, so "
    "these are latencies of an idle server, not its capacity; `rnnforge bench load RUN_DIR` measures "
    "concurrent clients, request rates and the throughput within a p99 SLO."
)
INTERVALS = (
    "Each percentile is followed by its 95 % confidence interval (order statistics, no assumption on the "
    "latency distribution): the true percentile of this machine under this load lies between the two "
    "figures in 95 of 100 such measurements. Where a row has too few calls to bracket a percentile "
    "(p90 needs 29, p99 299, p99.9 2,995) it says *n too small* instead of a number."
)


def _timing_rule(settings: dict, rows: list[dict]) -> str:
    """How warm-up and timing ended, with the warm-up calls each row took."""
    warm = [r["warmup"]["calls"] for r in rows if r.get("warmup")]
    unstable = sum(1 for r in rows if (r.get("warmup") or {}).get("until") == "time limit")
    if settings.get("warmup") is None:
        took = f"{min(warm)}-{max(warm)}" if warm and min(warm) != max(warm) else (str(warm[0]) if warm else "?")
        warmup = (
            "Warm-up ran until the latency was stable (the medians of three windows of 10 calls within 5 %): "
            f"{took} calls per row"
            + (f"; {unstable} row(s) never settled within --max-seconds and were timed anyway" if unstable else "")
            + "."
        )
    else:
        warmup = f"{settings['warmup']} warm-up calls per row."
    if settings.get("target_ci"):
        timing = (
            f"Then timed until the p50's interval was within {settings['target_ci']:.1%} of it, at most "
            f"{settings['max_seconds']} s per row"
        )
        missed = sum(1 for r in rows if r.get("stopped") == "time limit")
        timing += f" ({missed} row(s) reached the time limit first)." if missed else "."
    else:
        timing = f"Then up to {settings['runs']} timed calls (at most {settings['max_seconds']} s) per row."
    return f"{warmup} {timing}"


def _tensorflow_line(tensorflow: dict) -> str:
    """Where the TensorFlow rows come from, in words a reader cannot miss."""
    if tensorflow["source"] == "measured":
        return (
            "**TensorFlow**: measured now on this machine, in its own process: a `tf.function` with a fixed signature."
        )
    said = tensorflow["note"].removeprefix("TensorFlow: ")
    if tensorflow["source"] == "recorded":
        return (
            f"**TensorFlow**: {said}. Its rows and the /TF ratios set this machine's ONNX Runtime against "
            "TensorFlow as recorded then, on that machine."
        )
    return f"**TensorFlow**: no figures ({said})."


def _latency_table(rows: list[dict]) -> list[str]:
    lines = [
        "| batch | len | engine | n | warm-up | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | mean ms | samples/s "
        "| /TF p50 |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    p50 = p50_index(rows)
    for row in sorted(rows, key=lambda r: (r["batch_size"], r["seq_len"] or 0, r["engine"])):
        lat = row["latency_ms"]
        tf_p50 = p50.get(("tensorflow", row["batch_size"], row["seq_len"]))
        ratio = lat["p50"] / tf_p50 if tf_p50 and row["engine"] != "tensorflow" else None
        warm = row.get("warmup", {}).get("calls", "")
        cells = " | ".join(percentile_cell(row, key) for key in ("p50", "p90", "p95", "p99", "p99_9"))
        lines.append(
            f"| {row['batch_size']} | {row['seq_len'] or ''} | {row['engine']} | {row['runs']} | {warm} | {cells} | "
            f"{lat['mean']:.3f} | {row['throughput_per_s']:,.0f} | "
            + (f"{ratio:.3f}" if ratio is not None else "")
            + " |"
        )
    return lines


def percentile_cell(row: dict, key: str) -> str:
    """``0.412 (0.405-0.420)``; *n too small* where the row's calls cannot bracket the percentile;
    the bare figure for a row without intervals (TensorFlow recorded before schema 4)."""
    value = row["latency_ms"][key]
    if "ci95_ms" not in row:
        return f"{value:.3f}"
    interval = row["ci95_ms"].get(key)
    if interval is None:
        return "*n too small*"
    return f"{value:.3f} ({interval['low']:.3f}-{interval['high']:.3f})"


def provenance_block(result: dict) -> list[str]:
    """Where the figures come from, as one block: ONNX Runtime (version and file), per variant the
    session's providers, options as applied, threads and node placement; CUDA, CPU, and the
    machine's state before and after the timing. Empty for results before schema 4."""
    origin = result.get("provenance")
    if not origin:
        return []
    ort = origin["onnxruntime"]
    build = f", built for CUDA {ort['cuda_version']}" if ort.get("cuda_version") else ""
    lines = [
        "## Provenance",
        "",
        f"- onnxruntime {ort['version']} ({ort.get('package_name', 'onnxruntime')}{build}) imported from "
        f"`{ort['file']}`",
    ]
    for variant, session in result["sessions"].items():
        if "placement" not in session:
            continue
        placed = session["placement"]
        where = ", ".join(f"{n} on {p}" for p, n in placed["by_provider"].items())
        options = "; ".join(
            f"{name}: " + (", ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "no options")
            for name, opts in session["provider_options"].items()
        )
        lines.append(
            f"- {variant}: {placed['nodes']} nodes, {where} (ONNX Runtime's own placement, profiled); session "
            f"providers `{', '.join(session['session_providers'])}`; intra-op threads "
            f"{_threads(session.get('intra_op_threads'))}, inter-op {_threads(session.get('inter_op_threads'))}; "
            f"options as applied: {options}"
        )
    cuda, cpu = origin["cuda"], origin["cpu"]
    if cuda.get("driver"):
        libraries = ", ".join(f"{k} {v}" for k, v in cuda.get("libraries", {}).items()) or "none as pip packages"
        lines.append(
            f"- NVIDIA driver {cuda['driver']} (CUDA {cuda.get('driver_cuda_version') or '?'}); CUDA/cuDNN libraries: "
            f"{libraries}"
        )
    lines.append(f"- CPU: {cpu['model'] or 'unknown'}, governor {cpu['governor'] or 'not available'}")
    for when in ("before", "after"):
        state = origin[when]
        load = state["load_average"]
        lines.append(
            f"- {when} timing: load average {' '.join(f'{v:g}' for v in load) if load else 'not available'} "
            f"(1/5/15 min); GPU {_gpu_state(state['gpu'])}"
        )
    return [*lines, ""]


def _threads(count) -> str:
    return "ONNX Runtime's default" if count == 0 else ("?" if count is None else str(count))


def _gpu_state(gpu: dict) -> str:
    if not gpu.get("available"):
        return f"not available ({gpu.get('why', 'no nvidia-smi')})"
    return "; ".join(
        f"{g.get('index', '?')} {g.get('name', '')}: SM {g.get('clocks.sm')}/{g.get('clocks.max.sm')} MHz, memory "
        f"{g.get('clocks.mem')} MHz, {g.get('temperature.gpu')} C, {g.get('power.draw')} W of {g.get('power.limit')} W "
        f"limit, {g.get('pstate')}"
        for g in gpu.get("gpus", [])
    )


def write_report(path: Path, markdown: str, title: str) -> Path:
    """Write ``markdown`` to ``path`` and a self-contained HTML copy (``.html``, images inlined)."""
    fileio.write_text(path, markdown)
    fileio.write_text(path.with_suffix(".html"), to_html(markdown, path.parent, title))
    return path


def to_html(markdown: str, base_dir: Path, title: str) -> str:
    """Render ``markdown`` (CommonMark + tables) as one HTML page with its PNGs as data URIs."""
    import base64
    import html
    import re

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)

    def inline(match: re.Match) -> str:
        image = (Path(base_dir) / html.unescape(match.group(1))).resolve()
        if image.suffix != ".png" or not image.is_file():
            return match.group(0)
        return 'src="data:image/png;base64,' + base64.b64encode(image.read_bytes()).decode() + '"'

    def html_link(match: re.Match) -> str:  # a linked report.md that has its HTML copy: link that
        target = html.unescape(match.group(1))
        if (Path(base_dir) / target).with_suffix(".html").is_file():
            return f'href="{html.escape(target[: -len(".md")])}.html"'
        return match.group(0)

    body = re.sub(r'src="([^"]+)"', inline, body)
    body = re.sub(r'href="([^"]+\.md)"', html_link, body)
    body = body.replace("<table>", '<div class="wide"><table>').replace("</table>", "</table></div>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
        "line-height:1.45}h1,h2,h3{line-height:1.2}"
        ".wide{overflow-x:auto;margin:1em 0}table{border-collapse:collapse;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
        "td[style*=right]{font-variant-numeric:tabular-nums;white-space:nowrap}tbody tr:nth-child(even){background:#fafafa}"
        "img{max-width:100%;height:auto;display:block;margin:1em 0}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}code{font-size:90%}"
    )
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n{body}</body></html>\n"
    )


def summary_markdown(out: Path, results: dict[str, dict], title: str, intro: str) -> str:
    """One table over several runs' bench results, linking each run's full report."""
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "| run | task | provider | scores (TF) | scores (ORT) | parity max abs diff | ORT/TF p50 by batch | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        acc = result["accuracy"]
        ratios = "; ".join(
            f"{engine.replace('onnxruntime', 'ORT')} " + ", ".join(f"{b}: {r:.2f}" for b, r in by_batch.items())
            for engine, by_batch in result["ratios_over_tf"].items()
        )
        source = result.get("tensorflow", {}).get("source", "measured")
        ratios = {"measured": ratios, "recorded": f"{ratios} (TF figures recorded earlier, see the report)"}.get(
            source, "no TensorFlow baseline"
        )
        parity = result.get("parity") or {}
        lines.append(
            f"| {name} | {result['task']} | {result['provider']['requested']} | {format_scores(acc['tensorflow'])} | "
            f"{format_scores(acc[next(iter(acc['agreement_by_engine']))])} | "
            f"{parity.get('max_abs_diff', float('nan')):.2e} | {ratios} | "
            f"[report]({_rel(Path(result['report']), out)}) |"
        )
    lines.append("")
    lines += serving_summary(results)
    return "\n".join(lines)


def summary_table(results: dict[str, dict]) -> str:
    """The console's closing table over several runs' bench results: per run, its ONNX Runtime
    score (accuracy, or MAE against the naive forecast), parity, ORT/TF p50 by batch size, and the
    path of its HTML report."""
    rows = [("run", "score (ORT)", "parity", "ORT/TF p50 by batch", "report")]
    for name, result in results.items():
        rows.append(
            (
                name,
                _console_score(result),
                _console_parity(result.get("parity")),
                _console_ratios(result),
                str(Path(result["report"]).with_suffix(".html")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in rows
    )


def _console_score(result: dict) -> str:
    acc = result["accuracy"]
    scores = acc.get("onnxruntime") or next((v for k, v in acc.items() if k.startswith("onnxruntime")), {})
    if "accuracy" in scores:
        return f"accuracy {scores['accuracy']:.4f}"
    if "mae" in scores and "naive_mae" in scores:
        every = acc.get("every_output") or {}
        covered = next((k for k in every if k.startswith("coverage_") and k.count("_") == 2), None)
        interval = f", {covered[9:].replace('_', '-').upper()} covers {every[covered]:.0%}" if covered else ""
        return f"MAE {format_value(scores['mae'])} vs naive {format_value(scores['naive_mae'])}{interval}"
    return format_scores(scores) if scores else "-"


def _console_parity(parity: dict | None) -> str:
    if not parity or "max_abs_diff" not in parity:
        return "-"
    verdict = "ok" if parity.get("passed", True) else "FAILED"
    return f"{parity['max_abs_diff']:.1e} {verdict}"


def _console_ratios(result: dict) -> str:
    by_batch = result.get("ratios_over_tf", {}).get("onnxruntime") or {}
    if not by_batch:
        return "no TensorFlow baseline"
    recorded = " (TF recorded)" if result.get("tensorflow", {}).get("source") == "recorded" else ""
    return ", ".join(f"{batch}: {ratio:.2f}" for batch, ratio in by_batch.items()) + recorded
