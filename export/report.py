"""Markdown reports: one per bench run (``bench/report.md``) and one over a demo's tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rnnforge.run_dir import RunDir


def headline(scores: dict) -> dict:
    """The scores worth a table column: scalars, not the per-horizon-day detail."""
    return {k: v for k, v in scores.items() if isinstance(v, float) and "_d+" not in k}


def format_value(value: float) -> str:
    """4 decimals for rates and accuracies, thousands separators for counts such as riders."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}"


def format_scores(scores: dict) -> str:
    """``accuracy 0.9910, top3_accuracy 1.0000`` (or ``empty split`` for a split with no examples)."""
    if scores.get("examples") == 0:
        return "empty split"
    return ", ".join(f"{k} {format_value(v)}" for k, v in headline(scores).items())


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def bench_markdown(result: dict, run: RunDir) -> str:
    """The report a user reads before shipping: model, training, parity, accuracy, latency."""
    out = run.bench
    metrics = json.loads(run.metrics.read_text()) if run.metrics.is_file() else {}
    provider = result["provider"]
    machine = result["machine"]
    gpu = f", GPU {machine['gpu']['name']} (driver {machine['gpu']['driver']})" if machine.get("gpu") else ""
    lines = [
        f"# rnnforge report: {result['task']}",
        "",
        f"- run: `{result['run_dir']}`",
        f"- ONNX model: `{result['onnx_model']}`",
        f"- machine: {machine['cpu']}, {machine['logical_cores']} logical cores{gpu}",
        f"- ONNX Runtime providers: requested `{provider['requested']}`, session used "
        f"`{', '.join(provider['session_providers'])}`; intra-op threads {provider['intra_op_threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]
    if metrics:
        split = "test" if metrics.get("test", {}).get("examples") else "valid"
        lines += [
            "## Training",
            "",
            f"{metrics['epochs_run']} epochs on `{metrics['dataset']}` with {metrics['workers']} Ray workers in "
            f"{metrics['train_seconds']} s ({metrics['samples_per_s']} samples/s, {metrics['samples_per_s_per_worker']} "
            f"per worker), {metrics['restarts']} restart(s). {split.capitalize()} split: "
            + format_scores(metrics[split]) + ("" if split == "test" else " (the test split is empty)") + ".",
            "",
        ]
        for png, title in (("training_curve.png", "Training curve"), ("confusion_matrix.png", "Confusion matrix"),
                           ("forecast.png", "Forecast vs actual"), ("mae_per_horizon.png", "MAE per horizon day")):
            if (run.path / png).is_file():
                lines += [f"![{title}]({_rel(run.path / png, out)})", ""]
    parity = result.get("parity")
    if parity:
        agreement = f", top-1 agreement {parity['top1_agreement']:.4f}" if "top1_agreement" in parity else ""
        lines += ["## Parity (export)", "",
                  f"opset {parity['opset']}, {parity['nodes']} nodes; on {parity['batch']} {parity.get('split', 'test')} examples: max abs diff "
                  f"{parity['max_abs_diff']:.2e} (atol {parity['atol']:g}){agreement}.", ""]
    accuracy = result["accuracy"]
    score_keys = list(headline(accuracy["onnxruntime"]))
    lines += [f"## Accuracy on the {accuracy['split']} split", "",
              f"{accuracy['examples']} examples.", "",
              "| engine | " + " | ".join(score_keys) + " |",
              "|---|" + "---|" * len(score_keys)]
    for engine in ("tensorflow", "onnxruntime"):
        lines.append(f"| {engine} | " + " | ".join(format_value(accuracy[engine][k]) for k in score_keys) + " |")
    lines += ["", "ONNX Runtime vs TensorFlow: " + ", ".join(f"{k} {v:.4g}" for k, v in accuracy["agreement"].items()) + "."]
    per_day = sorted(k for k in accuracy["onnxruntime"] if k.startswith("mae_d+"))
    if per_day:
        lines += ["", "| horizon day | " + " | ".join(k[4:] for k in per_day) + " |", "|---|" + "---:|" * len(per_day)]
        for label, prefix in (("model MAE (ORT)", "mae_"), ("naive MAE", "naive_mae_"), ("model MAPE % (ORT)", "mape_")):
            lines.append(f"| {label} | " + " | ".join(f"{accuracy['onnxruntime'][prefix + k[4:]]:,.1f}" for k in per_day) + " |")
    lines += ["", "## Latency", "",
              f"Session creation {result['session_creation_ms']:.1f} ms, first inference {result['first_inference_ms']:.2f} ms. "
              f"{result['settings']['warmup']} warm-up runs, then up to {result['settings']['runs']} timed runs "
              f"(at most {result['settings']['max_seconds']} s) per row. TensorFlow runs a `tf.function` with a fixed signature.",
              "",
              "| batch | engine | n | p50 ms | p90 ms | p95 ms | p99 ms | mean ms | samples/s | ORT/TF p50 |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(result["latency"], key=lambda r: (r["batch_size"], r["engine"])):
        lat = row["latency_ms"]
        ratio = result["ratio_ort_over_tf"].get(str(row["batch_size"])) if row["engine"] == "onnxruntime" else None
        lines.append(f"| {row['batch_size']} | {row['engine']} | {row['runs']} | {lat['p50']:.3f} | {lat['p90']:.3f} | "
                     f"{lat['p95']:.3f} | {lat['p99']:.3f} | {lat['mean']:.3f} | {row['throughput_per_s']:.0f} | "
                     + (f"{ratio:.3f}" if ratio is not None else "") + " |")
    lines += ["", "![Latency vs batch size](latency_vs_batch.png)", "",
              "![Latency distribution](latency_distribution.png)", ""]
    if run.architecture.is_file():
        lines += ["## Architecture", "", "```", run.architecture.read_text().rstrip(), "```", ""]
    return "\n".join(lines)


def demo_markdown(out: Path, results: dict[str, dict]) -> str:
    """One table over the demo's tasks, linking each task's full report."""
    lines = ["# rnnforge demo report", "",
             "Every task trained with Ray Train on its embedded dataset, exported with tf2onnx and benchmarked "
             "on ONNX Runtime beside TensorFlow.", "",
             "| task | scores (TF) | scores (ORT) | parity max abs diff | ORT/TF p50 by batch | report |",
             "|---|---|---|---|---|---|"]
    for task, result in results.items():
        acc = result["accuracy"]
        fmt = format_scores
        ratios = ", ".join(f"{b}: {r:.2f}" for b, r in result["ratio_ort_over_tf"].items())
        parity = result.get("parity") or {}
        lines.append(f"| {task} | {fmt(acc['tensorflow'])} | {fmt(acc['onnxruntime'])} | "
                     f"{parity.get('max_abs_diff', float('nan')):.2e} | {ratios} | "
                     f"[{task}]({_rel(Path(result['report']), out)}) |")
    lines.append("")
    return "\n".join(lines)
