"""The GPU proof: every exported run benchmarked on ONNX Runtime CUDA, CUDA graphs, TensorRT and
the same machine's CPU, compared, and checked against the project's goals. Figures, not a test.

Runs on the serving install alone (onnxruntime-gpu, onnx, numpy, click, matplotlib,
markdown-it-py; no TensorFlow, no Ray), from a source checkout or an installed wheel:

    python benchmarks/gpu_bench.py RUNS_DIR --out gpu-bench      # RUNS_DIR: runs/demo after make demo
    python benchmarks/gpu_bench.py RUNS_DIR --out cpu-rehearsal --cpu-only

Steps, each a fresh ``rnnforge`` process writing under OUT (the runs are copied to OUT/runs
first, so the originals stay as they were):

1. ``cuda``: ``bench --all --provider cuda --variants fp32,fp16`` (exit 4 here ends the script:
   no usable CUDA, and never a CPU figure under a GPU label);
2. ``cuda_graph``: each run and variant with ``--cuda-graph`` (a refusal or a crash of ONNX
   Runtime is recorded per run and variant); ``levers``: each run's fp32 model under the CUDA
   provider options in ``CUDA_LEVERS``, at batch 1 and 256;
3. ``tensorrt``: ``bench --all --provider tensorrt``; where the TensorRT libraries are missing,
   OUT/tensorrt/NOT_AVAILABLE.txt says so;
4. ``cpu``: the same ``bench --all`` on the CPU provider;
5. ``bench compare`` CPU (baseline) vs CUDA (candidate) on throughput (OUT/compare_cpu_vs_cuda.md);
6. ``profile``: node events per inference at batch 1 from ONNX Runtime's profiler, per provider,
   and the share of node time by operator;
7. OUT/summary.md: the goals (p50 at batch 1, CUDA graph speed-up, CUDA/CPU samples/s for
   video, top-1 agreement with TensorFlow's stored outputs judged on its 95 % Wilson lower
   bound) with each figure and whether it is met, and the tables, written from OUT's JSON alone
   (bench_all.json per step, record.json and the benches it names): a bench whose file is not
   there shows as "not measured (raw file not kept)", never as a figure. Every ratio is one p50
   over another from this run. ``--summary-from DIR`` writes it again from a kept folder such as
   docs/benchmarks/gpu-h100.

TensorFlow figures come from each run's recorded timing (``--tf-baseline auto``), named as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rnnforge.core.stats import rate_gate
from rnnforge.export.results import p50_index

ROOT = Path(__file__).resolve().parents[1]
#: p50 at batch 1 on an H100-class card, ms (the issue's goals).
P50_GOALS_MS = {"sketch": 0.25, "forecast": 0.10, "video": 0.30}
CUDA_GRAPH_SPEEDUP_GOAL = 1.5
VIDEO_CUDA_OVER_CPU_GOAL = 10.0
STEP_LABELS = (("cuda", "CUDA"), ("tensorrt", "TensorRT"), ("cpu", "CPU"))
AGREEMENT_GOALS = {"onnxruntime": 0.999, "onnxruntime_fp16": 0.99}
PROFILE_RUNS = 20
#: Profiled runs left out first: cuDNN's algorithm search and allocations happen there.
PROFILE_WARMUP = 5
#: CUDA execution provider options tried where a goal is missed (each against the default session).
CUDA_LEVERS = (
    "use_tf32=0",  # exact fp32 MatMul/Conv: how far TF32 moves the outputs
    "prefer_nhwc=1",  # channels-last convolutions (video)
    "cudnn_conv_use_max_workspace=1",
    "cudnn_conv_algo_search=HEURISTIC",
)


def rnnforge(args: list, log: Path) -> subprocess.CompletedProcess:
    """``rnnforge ARGS`` in a fresh process; its output goes to ``log`` and to the console."""
    command = [sys.executable, "-m", "rnnforge", *map(str, args)]
    print("$ rnnforge " + " ".join(map(str, args)), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    print(result.stdout[-1500:] + result.stderr[-1500:], flush=True)
    return result


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else f"exit {result.returncode}"


def keep_bench_outputs(runs: Path, step_dir: Path) -> None:
    """Copy what one step wrote (bench_all.json, the summary and each run's bench/) to ``step_dir``."""
    step_dir.mkdir(parents=True, exist_ok=True)
    for name in ("bench_all.json", "bench_report.md", "bench_report.html"):
        if (runs / name).is_file():
            shutil.copy2(runs / name, step_dir / name)
    for run in sorted(p for p in runs.iterdir() if (p / "bench").is_dir()):
        shutil.copytree(
            run / "bench", step_dir / run.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("trt_cache")
        )


def bench_all(runs: Path, out: Path, step: str, provider: str, settings: list) -> subprocess.CompletedProcess:
    result = rnnforge(["bench", "--all", runs, "--provider", provider, *settings], out / step / "console.log")
    if result.returncode == 0:
        keep_bench_outputs(runs, out / step)
    return result


def bench_one(run: Path, out: Path, step: Path, args: list) -> str:
    """``rnnforge ARGS`` (a bench of ``run``), its bench/ kept in ``step``: the bench.json path
    relative to ``out``, or the refusal."""
    result = rnnforge(args, step / "console.log")
    if result.returncode != 0:
        return f"not possible: {error_line(result)}"
    shutil.copytree(run / "bench", step, dirs_exist_ok=True)
    return str((step / "bench.json").relative_to(out))


def exported_runs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if (p / "model.onnx").is_file())


def cuda_graph_step(runs: Path, out: Path, settings: list, variants: list[str]) -> dict:
    """Each run and variant with ``--cuda-graph``, one bench each (a variant that ONNX Runtime
    cannot capture, or crashes on, loses only its own figure): {run: {variant: bench.json path or
    the refusal}}."""
    return {
        run.name: {
            variant: bench_one(
                run,
                out,
                out / "cuda_graph" / f"{run.name}-{variant}",
                ["--verbose", "bench", run, "--provider", "cuda", "--cuda-graph", *with_variants(settings, variant)],
            )
            for variant in variants
        }
        for run in exported_runs(runs)
    }


def with_variants(settings: list, variants: str) -> list:
    """``settings`` with its ``--variants`` value replaced."""
    at = settings.index("--variants")
    return [*settings[:at], "--variants", variants, *settings[at + 2 :]]


def levers_step(runs: Path, out: Path, settings: list) -> dict:
    """CUDA provider options tried on each run's fp32 model at batch 1 and 256 (no TensorFlow):
    {run: {lever: bench.json path or the refusal}}; the default session is the ``cuda`` step."""
    fp32 = with_variants(settings, "fp32")
    fp32[fp32.index("--batch-sizes") + 1] = "1,256"
    return {
        run.name: {
            lever: bench_one(
                run,
                out,
                out / "levers" / run.name / lever.replace("=", "-"),
                ["bench", run, "--provider", "cuda", "--provider-option", lever, "--tf-baseline", "none", *fp32],
            )
            for lever in CUDA_LEVERS
        }
        for run in exported_runs(runs)
    }


def profile_nodes(runs: Path, providers: list[str]) -> dict:
    """Node events per inference at batch 1 from ONNX Runtime's profiler, the first
    ``PROFILE_WARMUP`` calls left out: {run: {provider: figures}}.

    On CUDA every node event is at least one kernel launch; the count is what a CUDA graph saves."""
    import numpy as np
    import onnxruntime as ort

    from rnnforge.export.eval_set import MULTI_PREFIX

    if "CUDAExecutionProvider" in providers and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    out = {}
    for run in sorted(p for p in runs.iterdir() if (p / "model.onnx").is_file() and (p / "eval.npz").is_file()):
        with np.load(run / "eval.npz", allow_pickle=False) as stored:  # "x", or "x.NAME" per input
            first = {k: np.ascontiguousarray(stored[k][:1]) for k in stored.files if k.partition(".")[0] == "x"}
        out[run.name] = {}
        for provider in providers:
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(run / f"profile_{provider}")
            chain = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
            session = ort.InferenceSession(str(run / "model.onnx"), options, providers=chain)
            feed = {i.name: first.get(MULTI_PREFIX + i.name, first.get("x")) for i in session.get_inputs()}
            for _ in range(PROFILE_WARMUP + PROFILE_RUNS):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
            nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
            calls = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
            warm_end = calls[PROFILE_WARMUP - 1] if len(calls) == PROFILE_WARMUP + PROFILE_RUNS else -1
            nodes = [e for e in nodes if e.get("ts", 0) > warm_end]
            counted = PROFILE_RUNS if warm_end >= 0 else PROFILE_WARMUP + PROFILE_RUNS
            by_provider: dict[str, int] = {}
            by_op_us: dict[str, float] = {}
            for event in nodes:
                name = event.get("args", {}).get("provider", "?")
                by_provider[name] = by_provider.get(name, 0) + 1
                op = event.get("args", {}).get("op_name", "?")
                by_op_us[op] = by_op_us.get(op, 0.0) + float(event.get("dur", 0))
            total_us = sum(by_op_us.values()) or 1.0
            out[run.name][provider] = {
                "node_events_per_inference": round(len(nodes) / counted, 1),
                "by_provider_per_inference": {k: round(v / counted, 1) for k, v in by_provider.items()},
                "node_us_per_inference": round(total_us / counted, 1),
                "time_share_by_op": {
                    op: round(us / total_us, 3) for op, us in sorted(by_op_us.items(), key=lambda kv: -kv[1])[:4]
                },
                "session_providers": session.get_providers(),
            }
    return out


NOT_KEPT = "not measured (raw file not kept)"


def load_json(out: Path, relative: str) -> dict | None:
    """``out / relative`` read as JSON, or None where that file is not there."""
    path = out / relative
    return json.loads(path.read_text()) if path.is_file() else None


def step_results(out: Path, step: str) -> dict:
    """A step's ``{run: bench result}``: ``STEP/bench_all.json`` as this script writes it, or
    ``STEP_bench_all.json`` as docs/benchmarks/ keeps it; empty when neither is there."""
    return load_json(out, f"{step}/bench_all.json") or load_json(out, f"{step}_bench_all.json") or {}


def outcomes(out: Path, by_name: dict) -> tuple[dict, dict]:
    """A step's ``{name: bench.json path or refusal}`` split into the results whose file is there
    and, for the rest, why there is no figure (the refusal, or ``NOT_KEPT``)."""
    results, missing = {}, {}
    for name, outcome in by_name.items():
        result = load_json(out, outcome) if outcome.endswith(".json") else None
        if result is not None:
            results[name] = result
        else:
            missing[name] = NOT_KEPT if outcome.endswith(".json") else outcome
    return results, missing


def p50(result: dict | None, engine: str, batch: int) -> float | None:
    """The full-length p50 ms of ``engine`` at ``batch`` in ``result``, or None where not measured."""
    return p50_index(result["latency"]).get((engine, batch, None)) if result else None


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def table(header: list[str], rows: list[list], align: str) -> list[str]:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r``; None cells are empty."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]


def ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def graph_figures(run: str, src: dict) -> tuple[float | None, float | None, str]:
    """The default session's and the CUDA graph's fp32 p50 at batch 1, and why the graph has none."""
    why = src["graph_missing"][run].get("fp32", "not run")
    short = why if why in (NOT_KEPT, "not run") else "not possible (listed below)"
    base = p50(src["cuda"].get(run), "onnxruntime", 1)
    return base, p50(src["graphs"][run].get("fp32"), "onnxruntime", 1), short


def goal_p50(run: str, task: str, src: dict) -> list[list]:
    """CUDA p50 at batch 1 against the task's goal: the default session, and the CUDA graph's."""
    base, graph, why = graph_figures(run, src)
    if base is None:
        return []
    goal = P50_GOALS_MS.get(task)
    figure = f"{base:.3f} ms; CUDA graph " + (f"{graph:.3f} ms" if graph else why)
    best = min(base, graph or base)
    return [[f"CUDA p50 at batch 1 <= {goal} ms", figure, verdict(best <= goal if goal else None)]]


def goal_graph_speedup(run: str, task: str, src: dict) -> list[list]:
    """The CUDA graph's speed-up at batch 1 over the default session of the same run (p50 / p50)."""
    base, graph, why = graph_figures(run, src)
    if base is None:
        return []
    speedup = base / graph if graph else None
    figure = f"{base:.3f} / {graph:.3f} ms: {speedup:.2f}x" if graph else why
    goal = f"CUDA graph >= {CUDA_GRAPH_SPEEDUP_GOAL}x faster at batch 1"
    return [[goal, figure, verdict(speedup >= CUDA_GRAPH_SPEEDUP_GOAL if speedup else None)]]


def goal_agreement(run: str, task: str, src: dict) -> list[list]:
    """Top-1 agreement with TensorFlow, met only when its 95 % Wilson lower bound clears the goal;
    a regression task's largest output difference instead (no goal)."""
    result = src["cuda"].get(run)
    if result is None:
        return []
    rows, examples = [], result["accuracy"]["examples"]
    for engine, goal in AGREEMENT_GOALS.items():
        agreement = result["accuracy"]["agreement_by_engine"].get(engine)
        if agreement is None:
            continue
        if "top1_agreement" not in agreement:
            rows.append([f"{engine} max abs diff vs TF outputs", f"{agreement['max_abs_diff']:.3g}", "n/a"])
            continue
        agreed = agreement.get("top1_agreed", round(agreement["top1_agreement"] * examples))
        gate = rate_gate(agreed, examples, goal)
        low = gate["lower_bound"]
        # The point figure can clear a goal that the examples cannot establish (0 of 240 failing: >= 98.4 %).
        established = gate["verdict"] if gate["verdict"] == "not established" else verdict(gate["passed"])
        figure = f"{agreed:,} of {examples:,}: {agreed / examples:.2%}, lower bound {low:.2%}"
        rows.append([f"{engine} top-1 agreement with TF >= {goal:.1%} (95 % lower bound)", figure, established])
    return rows


def goal_video_throughput(run: str, task: str, src: dict) -> list[list]:
    """Video's CUDA/CPU samples/s at batch 256, both from the p50 (batch / p50) of the same run."""
    if task != "video" or run not in src["cuda"]:
        return []
    cuda, cpu = p50(src["cuda"][run], "onnxruntime", 256), p50(src["cpu"].get(run), "onnxruntime", 256)
    ratio = cpu / cuda if cuda and cpu else None
    figure = f"{256e3 / cuda:,.0f} vs {256e3 / cpu:,.0f} /s ({ratio:.2f}x, p50)" if ratio else "not measured"
    return [
        [
            f"CUDA >= {VIDEO_CUDA_OVER_CPU_GOAL:g}x CPU samples/s at batch 256",
            figure,
            verdict(ratio >= VIDEO_CUDA_OVER_CPU_GOAL if ratio else None),
        ]
    ]


#: The goals table: each function gives a run's rows (goal, figure, verdict), none where it does not apply.
GOALS = (goal_p50, goal_graph_speedup, goal_agreement, goal_video_throughput)


def sources(out: Path, record: dict) -> dict:
    """Every figure a summary shows, read from the JSON under ``out`` and nothing else."""
    src = {step: step_results(out, step) for step in ("cuda", "cpu", "tensorrt")}
    runs = sorted(set(src["cuda"]) | set(src["cpu"]))
    split = {run: outcomes(out, record["cuda_graph"].get(run, {})) for run in runs}
    src["graphs"] = {run: kept for run, (kept, _) in split.items()}
    src["graph_missing"] = {run: missing for run, (_, missing) in split.items()}
    src["levers"] = {run: outcomes(out, by_lever) for run, by_lever in sorted((record.get("levers") or {}).items())}
    src["runs"] = runs
    return src


def summary(out: Path, record: dict, plots: dict[str, str] | None = None) -> str:
    """The goals, each figure beside it, and the tables, from the JSON files under ``out`` only:
    a bench whose file is not there shows as ``NOT_KEPT``, never as a figure. ``plots``:
    ``{run: image file name}`` to link."""
    src = sources(out, record)
    cuda, cpu = src["cuda"], src["cpu"]
    any_result = next(iter(cuda.values()), None) or next(iter(cpu.values()), None)
    machine = any_result["machine"] if any_result else {}
    gpu = machine.get("gpu") or {}
    lines = [
        f"# ONNX Runtime on {gpu.get('name') or machine.get('cpu', '?') + ' (no GPU)'}",
        "",
        f"- machine: {machine.get('cpu', '?')}, {machine.get('logical_cores', '?')} logical cores; "
        f"GPU {gpu.get('name', 'none')} (driver {gpu.get('driver', '?')})",
        "- versions: " + (", ".join(f"{k} {v}" for k, v in any_result["versions"].items()) if any_result else "?"),
        f"- run: {record['started']} to {record['finished']} ({record['seconds']:.0f} s), "
        f"settings `{' '.join(record['settings'])}`",
        f"- TensorRT: {record['tensorrt']}",
        "- one closed-loop client (single stream); ratios are p50 over p50 within this run",
        "",
        "## Goals",
        "",
    ]
    rows = [
        [run, *row]
        for run in src["runs"]
        for goal in GOALS
        for row in goal(run, (cuda.get(run) or cpu[run])["task"], src)
    ]
    if not cuda:
        rows.append(["all", "CUDA goals", "no CUDA figures: " + record["tensorrt"].replace("not tried ", ""), "n/a"])
    lines += table(["run", "goal", "figure", "verdict"], rows, "llll")
    lines += ["", "## p50 ms by batch size", ""]
    lines += table(
        ["run", "engine", "step", *(f"b{b}" for b in record["batch_sizes"])],
        p50_rows(src, record),
        "lll" + "r" * len(record["batch_sizes"]),
    )
    missing = [
        f"- {run} {variant}: {why}"
        for run, by_variant in sorted(src["graph_missing"].items())
        for variant, why in by_variant.items()
    ]
    if missing:
        lines += ["", "CUDA graph benches without a figure:", "", *missing]
    lines += levers_table(src)
    if cuda and cpu:
        lines += ["", "## CUDA speed-up over the CPU (CPU p50 / CUDA p50, same run)", ""]
        lines += table(
            ["run", "engine", *(f"b{b}" for b in record["batch_sizes"])],
            speedup_rows(src, record),
            "ll" + "r" * len(record["batch_sizes"]),
        )
    if plots:
        lines += [
            "",
            "## Latency and throughput by provider",
            "",
            *(f"![{run}]({name})" for run, name in plots.items()),
        ]
    if record.get("profile"):
        lines += [
            "",
            "## Node events per inference at batch 1 (ONNX Runtime profiler)",
            "",
            "On CUDA each node event is at least one kernel launch: the count is what a CUDA graph saves.",
            "",
        ]
        lines += table(
            ["run", "provider", "node events", "by provider", "node time us", "time share by op"],
            [
                [
                    run,
                    provider,
                    figures["node_events_per_inference"],
                    ", ".join(f"{k} {v}" for k, v in figures["by_provider_per_inference"].items()),
                    figures["node_us_per_inference"],
                    ", ".join(f"{op} {share:.0%}" for op, share in figures["time_share_by_op"].items()),
                ]
                for run, by_provider in record["profile"].items()
                for provider, figures in by_provider.items()
            ],
            "llrlrl",
        )
    return "\n".join(lines) + "\n"


def p50_rows(src: dict, record: dict) -> list[list]:
    """One row per step, run and engine (TensorFlow's recorded timing once per run), then the CUDA graphs."""
    rows, tf_shown = [], set()
    steps = [(step, src[step]) for step in ("cuda", "tensorrt", "cpu")]
    steps += [
        ("cuda graph", {run: result})
        for run, by_variant in sorted(src["graphs"].items())
        for result in by_variant.values()
    ]
    for step, results in steps:
        for run, result in sorted(results.items()):
            for engine in sorted({r["engine"] for r in result["latency"]}):
                if engine == "tensorflow" and (run in tf_shown or step == "cuda graph"):
                    continue  # the same timing, recorded once on the training machine
                if engine == "tensorflow":
                    tf_shown.add(run)
                where = tf_where(result) if engine == "tensorflow" else step
                rows.append([run, engine, where, *(ms(p50(result, engine, b)) for b in record["batch_sizes"])])
    return rows


def speedup_rows(src: dict, record: dict) -> list[list]:
    """CPU p50 / CUDA p50 per run, ONNX Runtime engine and batch size (above 1: CUDA is faster)."""
    rows = []
    for run in sorted(set(src["cuda"]) & set(src["cpu"])):
        for engine in sorted({r["engine"] for r in src["cuda"][run]["latency"]} - {"tensorflow"}):
            cells = [(p50(src["cpu"][run], engine, b), p50(src["cuda"][run], engine, b)) for b in record["batch_sizes"]]
            rows.append([run, engine, *(f"{c / g:.2f}x" if c and g else None for c, g in cells)])
    return rows


def tf_where(result: dict) -> str:
    """Where TensorFlow's figures in ``result`` come from: measured here, or recorded elsewhere."""
    tf = result.get("tensorflow") or {}
    if tf.get("source") == "recorded":
        machine = tf.get("machine") or {}
        return f"recorded on {machine.get('cpu', '?')}, {tf.get('intra_op_threads', '?')} threads"
    return "measured here"


def provider_plots(out: Path, record: dict) -> dict[str, str]:
    """One plot per run, p50 and samples/s by batch size: CUDA, CUDA graph, TensorRT and CPU
    variants beside TensorFlow's recorded timing, from the JSON under ``out`` only; {run: file name}."""
    from rnnforge.core.plots import latency_vs_batch

    src, names = sources(out, record), {}
    for run in src["runs"]:
        rows, labelled = [], [(label, src[step].get(run)) for step, label in STEP_LABELS]
        labelled += [("CUDA graph", result) for result in src["graphs"][run].values()]
        for label, result in labelled:
            for row in (result or {}).get("latency", []):
                if row.get("seq_len") is None and row["engine"] != "tensorflow":
                    rows.append({**row, "engine": f"{label} {row['engine'].replace('onnxruntime', 'ORT')}"})
        source = src["cuda"].get(run) or src["cpu"][run]
        tf_rows = [r for r in source["latency"] if r["engine"] == "tensorflow" and r.get("seq_len") is None]
        rows += [{**r, "engine": f"TensorFlow ({tf_where(source)})"} for r in tf_rows]
        names[run] = latency_vs_batch(rows, out / f"{run}_latency.png").name
    return names


def levers_table(src: dict) -> list[str]:
    """The provider options tried (``levers``) beside the default CUDA session of the same run, fp32;
    the options without a figure listed under it."""
    if not src["levers"]:
        return []
    rows, missing = [], []
    for run, (kept, why_not) in src["levers"].items():
        default = [p50(src["cuda"].get(run), "onnxruntime", b) for b in (1, 256)]
        missing += [f"- {run} `{lever}`: {why}" for lever, why in why_not.items()]
        for lever, result in kept.items():
            cells = [p50(result, "onnxruntime", b) for b in (1, 256)]
            agreement = result["accuracy"]["agreement_by_engine"].get("onnxruntime", {})
            match = (
                f"top-1 {agreement['top1_agreement']:.2%}"
                if "top1_agreement" in agreement
                else f"max abs diff {agreement.get('max_abs_diff', float('nan')):.3g}"
            )
            ratios = [f"{c / d:.2f}x" if c and d else None for c, d in zip(cells, default)]
            rows.append([run, f"`{lever}`", *map(ms, cells), *ratios, match])
    lines = ["", "## CUDA provider options tried (fp32, p50 ms; the default session is the cuda step)", ""]
    if rows:
        header = ["run", "options", "b1", "b256", "b1 vs default", "b256 vs default", "agreement with TF"]
        lines += [*table(header, rows, "llrrrrl"), ""]
    return lines + (["Options without a figure:", "", *missing] if missing else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, nargs="?", help="folder of exported runs (e.g. runs/demo)")
    parser.add_argument("--out", type=Path, default=Path("gpu-bench"), help="everything is written here")
    parser.add_argument("--cpu-only", action="store_true", help="rehearse the CPU half on a machine without a GPU")
    parser.add_argument("--batch-sizes", default="1,8,32,256")
    parser.add_argument("--max-seconds", default="1.5", help="per bench row")
    parser.add_argument("--runs", default="200", help="timed runs per bench row (cut at --max-seconds)")
    parser.add_argument("--variants", default="fp32,fp16", help="fp16 needs 'rnnforge export onnx RUN --fp16' first")
    parser.add_argument(
        "--summary-from",
        type=Path,
        metavar="DIR",
        help="only write DIR/summary.md and the plots again from the JSON in DIR (record.json and the benches it names)",
    )
    args = parser.parse_args(argv)
    if args.summary_from:
        record = json.loads((args.summary_from / "record.json").read_text())
        plots = provider_plots(args.summary_from, record)
        (args.summary_from / "summary.md").write_text(summary(args.summary_from, record, plots))
        print(f"summary: {args.summary_from / 'summary.md'}")
        return 0
    if args.runs_dir is None or not args.runs_dir.is_dir():
        print(f"error: {args.runs_dir} is not a folder of exported runs", file=sys.stderr)
        return 2
    exported = exported_runs(args.runs_dir)
    lacking = [p for p in exported if "fp16" in args.variants and not (p / "model.fp16.onnx").is_file()]
    if not exported or lacking:
        what = f"{lacking[0]} has no model.fp16.onnx" if lacking else f"{args.runs_dir} holds no exported run"
        print(f"error: {what}: run 'rnnforge export onnx RUN --fp16' on the training machine first", file=sys.stderr)
        return 2
    started = time.time()
    runs = args.out / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    shutil.copytree(args.runs_dir, runs, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "trt_cache"))
    settings = [
        "--batch-sizes",
        args.batch_sizes,
        "--max-seconds",
        args.max_seconds,
        "--runs",
        args.runs,
        "--variants",
        args.variants,
    ]
    record = {
        "settings": settings,
        "batch_sizes": [int(b) for b in args.batch_sizes.split(",")],
        "cuda_graph": {},
        "tensorrt": "not tried (--cpu-only)",
    }
    providers = ["CPUExecutionProvider"]
    if not args.cpu_only:
        cuda = bench_all(runs, args.out, "cuda", "cuda", settings)
        if cuda.returncode != 0:
            print(f"gpu_bench: CUDA is not usable here: {error_line(cuda)}", file=sys.stderr)
            return cuda.returncode
        record["cuda_graph"] = cuda_graph_step(runs, args.out, settings, args.variants.split(","))
        record["levers"] = levers_step(runs, args.out, settings)
        trt = bench_all(runs, args.out, "tensorrt", "tensorrt", settings)
        record["tensorrt"] = "measured" if trt.returncode == 0 else f"not available: {error_line(trt)}"
        if trt.returncode != 0:
            (args.out / "tensorrt" / "NOT_AVAILABLE.txt").write_text(record["tensorrt"] + "\n")
        providers.insert(0, "CUDAExecutionProvider")
    cpu = bench_all(runs, args.out, "cpu", "cpu", settings)
    if cpu.returncode != 0:
        print(f"gpu_bench: the CPU bench failed: {error_line(cpu)}", file=sys.stderr)
        return cpu.returncode
    if not args.cpu_only:
        rnnforge(
            [
                "bench",
                "compare",
                args.out / "cpu" / "bench_all.json",
                args.out / "cuda" / "bench_all.json",
                "--metric",
                "throughput",
                "--threshold",
                "1.0",
                "--output",
                args.out / "compare_cpu_vs_cuda.md",
            ],
            args.out / "compare.log",
        )
    record["profile"] = profile_nodes(runs, providers)
    record.update(
        started=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
        finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        seconds=time.time() - started,
    )
    (args.out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary(args.out, record, provider_plots(args.out, record)))
    print(f"summary: {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
