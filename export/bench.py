"""``rnnforge bench RUN_DIR``: ONNX Runtime beside TensorFlow, each engine in its own process.

Reads only the run dir: the ONNX model(s), ``eval.npz`` (the evaluation examples, their labels
and TensorFlow's outputs on them, written by ``rnnforge export onnx``), ``config.json`` and, for
the report, the training artifacts; every file it will use is checked before any work
(``rnnforge.core.run_files``: each file's schema, the stored examples against every variant's
inputs), ``bench --all`` checks every run before timing any. Neither the dataset nor TensorFlow,
Ray or tf2onnx is needed: a run dir copied to an inference machine with ONNX Runtime benches there.

For each batch size (and, for models with a dynamic time axis, each ``--seq-lengths`` value)
every engine warms up until its latency is stable (or ``--warmup`` calls), then runs timed calls
(``--runs``, or until ``--target-ci`` is met; cut at ``--max-seconds``) as one closed-loop client
(each call starts when the previous one returned; ``bench load`` measures concurrency): each
ONNX Runtime variant (fp32 ``model.onnx``, fp16 ``model.fp16.onnx``, int8 ``model.int8.onnx``), then TensorFlow's
``tf.function`` with a fixed signature, one after the other, each in a fresh process with the
same inputs and intra-op threads (``rnnforge.export.measure``). Where TensorFlow cannot run, the
last timing recorded in ``bench/tf_timing.json`` stands in, named as such with its machine, or
TensorFlow is left out with one line saying so (``--tf-baseline``: ``export.baseline``). Reported as
``onnxruntime_perf_test`` and ``perf_analyzer`` users expect: min/mean/p50/p90/p95/p99/p99.9/max
latency, each percentile with its 95 % interval where the sample supports one, throughput,
session creation and first-inference time, MLPerf-style SingleStream p90 and Offline samples/s;
where ONNX Runtime placed each variant's nodes (a GPU session that would run one on the CPU is
refused); the provenance (``export.provenance``); and every engine's scores on the stored
examples with their agreement and deltas against TensorFlow's stored outputs. A requested GPU provider that the session does
not really use is an error, never a CPU figure. Writes ``bench/bench.json`` (``results.SCHEMA_VERSION``,
``bench.schema.json``), ``bench/report.md``, ``bench/report.html`` and plots as one set: staged
beside ``bench/``, moved in only once all are written, so ``bench/`` keeps its earlier results
when a bench fails or is interrupted.

    rnnforge bench runs/sketch --batch-sizes 1,32 --variants fp32,fp16,int8
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnforge.core import fileio, plots, run_files
from rnnforge.core.arrays import Inputs, count, example_bytes, first
from rnnforge.core.errors import UserError
from rnnforge.core.machine import available_memory, machine_info, versions
from rnnforge.core.run_dir import RunDir
from rnnforge.core.run_files import OnnxFile
from rnnforge.export.baseline import check_baseline, tensorflow_baseline
from rnnforge.export.engines import ModelInput, provider_setup
from rnnforge.export.eval_set import EvalSet, load_eval_set
from rnnforge.export.measure import TENSORFLOW, Job, run_in_subprocess
from rnnforge.export.provenance import provenance, snapshot
from rnnforge.export.results import (
    SCHEMA_VERSION,
    engine_name,
    ratios,
    scenarios,
    score_engines,
    summary_line,
    validate_result,
)
from rnnforge.export.settings import VARIANTS, BenchSettings, variant_path


@dataclass(frozen=True)
class BenchTarget:
    """What one bench runs on: the run, its task spec, the ONNX file of each variant, the export's
    source run (from the model's metadata), and the stored examples."""

    run: RunDir
    spec: object
    paths: dict[str, Path]
    source_run: str
    eval_set: EvalSet
    model_note: str | None = None


def run_bench(run_dir: Path, settings: BenchSettings | None = None, model_path: Path | None = None) -> dict:
    """Benchmark the run's ONNX model(s) (``model_path`` replaces ``model.onnx``); write bench.json,
    report.md/html and plots; return the result with ``summary`` and ``report`` added."""
    settings = (settings or BenchSettings()).checked()
    if Path(run_dir).is_dir():  # a missing run dir is refused by load_target, naming what is missing
        check_output_folder(RunDir(Path(run_dir)))
    target = load_target(RunDir(Path(run_dir)), settings, model_path)
    print(
        f"{target.spec.name}: {count(target.eval_set.x)} {target.eval_set.split} examples from "
        f"{target.run.eval_set.name}; each engine in its own process, {settings.threads} intra-op thread(s)",
        flush=True,
    )
    before = snapshot()
    with tempfile.TemporaryDirectory(prefix="rnnforge-bench-") as work:
        measured = {engine_name(v): measure_variant(target, v, settings, Path(work)) for v in target.paths}
        baseline = tensorflow_baseline(target.run, target.spec.name, target.source_run, settings, Path(work))
    result = assemble(target, settings, measured, baseline, provenance(before, snapshot()))
    validate_result(result)
    samples = {name: m["samples"]["latency_ms"] for name, m in measured.items()}
    if baseline.get("samples", {}).get("batch_size") == settings.batch_sizes[0]:
        samples = {TENSORFLOW: baseline["samples"]["latency_ms"], **samples}
    write_outputs(target.run, result, samples, baseline.get("record"))
    return {**result, "report": str(target.run.bench / "report.md"), "summary": summary_line(result)}


def run_bench_all(runs_dir: Path, settings: BenchSettings | None = None) -> tuple[Path, dict[str, dict]]:
    """``run_bench`` every exported run under ``runs_dir``; one summary report; returns its path
    and each run's result (``export.report.summary_table`` makes the console's table of them)."""
    from rnnforge.export.report import summary_markdown, write_report

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"--all {runs_dir} is not a directory of run dirs")
    runs = sorted(p for p in runs_dir.iterdir() if (p / "config.json").is_file())
    if not runs:
        raise UserError(f"--all {runs_dir} holds no run dirs (folders with a config.json from 'rnnforge train')")
    fileio.check_writable(runs_dir, "--all")
    for run in map(RunDir, runs):
        check_output_folder(run)
    settings = (settings or BenchSettings()).checked()
    for run in map(RunDir, runs):  # every run's files are checked before the first is timed
        load_target(run, settings, None)
    results = {}
    for run in runs:
        print(f"==> bench {run}", flush=True)
        results[run.name] = run_bench(run, settings)
    fileio.write_json(
        runs_dir / "bench_all.json",
        {name: {k: v for k, v in r.items() if k != "summary"} for name, r in results.items()},
    )
    report = runs_dir / "bench_report.md"
    intro = (
        f"{len(results)} runs under `{runs_dir}`, each benchmarked on ONNX Runtime beside TensorFlow "
        "(each engine in its own process); `bench_all.json` holds every figure."
    )
    write_report(
        report, summary_markdown(runs_dir, results, "rnnforge benchmark report", intro), "rnnforge benchmark report"
    )
    return report, results


# --- what is benched ----------------------------------------------------------------------------


def load_target(run: RunDir, settings: BenchSettings, model_path: Path | None) -> BenchTarget:
    """Check every file of the run dir this bench will use, before any work (``core.run_files``):
    config.json, the ONNX file(s), the stored examples against every variant, parity.json,
    metrics.json and a recorded TensorFlow timing it may stand in with. Everything else reads from here."""
    from rnnforge.models import TASKS, get_spec

    config = run.load_config(TASKS, require_model=False)
    spec = get_spec(config["task"])
    paths = variant_paths(run, model_path, settings.variants)
    models = {v: checked_export(p, spec.name, config["info"]) for v, p in paths.items()}
    model = models[next(iter(paths))]
    meta = model.meta
    source_run = meta.get("rnnforge.source_run", "")
    other = other_run(run, meta)
    note = None
    if other and model_path is None:
        raise UserError(
            f"{paths['fp32']} was exported from another run ({other}): export this run with "
            f"'rnnforge export onnx {run.path}', or name the file with --model to bench it anyway"
        )
    if other:
        note = (
            f"--model {paths['fp32']} was exported from another run ({other}); it is scored and "
            f"compared against the examples and TensorFlow outputs stored in {run.eval_set}"
        )
        print(f"note: {note}", flush=True)
    codes = {t.name: t.codes for t in spec.onnx.inputs if t.codes}
    eval_set = load_eval_set(
        run.eval_set,
        spec.name,
        None if other else source_run,
        models=list(models.values()),
        codes=codes,
        labels=spec.kind,
    )
    check_seq_lengths(spec.name, model.input, eval_set.x, settings.seq_lengths)
    check_batch_memory(eval_set.x, settings)
    if run.parity_of(next(iter(paths.values()))).is_file():
        run_files.read_parity(run.parity_of(next(iter(paths.values()))))
    if run.metrics.is_file():
        run_files.read_metrics(run.metrics)
    check_baseline(run, spec.name, source_run, settings)
    return BenchTarget(run, spec, paths, source_run, eval_set, note)


def other_run(run: RunDir, meta: dict) -> str | None:
    """Why the export with ``meta`` comes from another run than ``run``, or None: its recorded
    source model (``rnnforge.source_model_sha256``) is not the run's model.keras. Copies of a run
    keep their model.keras, so a copied run still matches its own export."""
    recorded = meta.get("rnnforge.source_model_sha256")
    if not recorded or not run.model.is_file() or fileio.sha256_file(run.model) == recorded:
        return None
    return f"{meta.get('rnnforge.source_run', 'unknown')}, whose model.keras is not {run.model}"


def variant_paths(run: RunDir, model_path: Path | None, variants) -> dict[str, Path]:
    """The ONNX file of each requested variant (names checked by ``BenchSettings.checked``;
    ``--model`` replaces the fp32 one)."""
    fp32 = Path(model_path) if model_path else run.onnx
    paths = {v: variant_path(fp32, v) for v in VARIANTS if v in variants}
    for variant, path in paths.items():
        if variant == "ensemble" and not path.is_file():
            raise UserError(
                f"{path} does not exist: only a distilled forecaster (trained with --distil) keeps its ensemble "
                f"beside model.onnx; export it with 'rnnforge export onnx {run.path}'"
            )
        if variant != "fp32" and not path.is_file():
            raise UserError(f"{path} does not exist: run 'rnnforge export onnx {run.path} --{variant}' first")
    return paths


def check_batch_memory(x: Inputs, settings: BenchSettings, memory: int | None = None) -> None:
    """Refuse ``--batch-sizes`` whose largest batch's inputs alone (one example's bytes times the
    batch, at the longest ``--seq-lengths``) would not fit half the memory available here."""
    memory = available_memory() if memory is None else memory
    if memory is None or not count(x):
        return
    per_example, x = example_bytes(x), first(x)
    if settings.seq_lengths and x.ndim >= 2 and x.shape[1]:
        per_example = per_example * max(max(settings.seq_lengths), x.shape[1]) // x.shape[1]
    batch = max(settings.batch_sizes)
    need = batch * per_example
    if need > memory // 2:
        raise UserError(
            f"--batch-sizes {batch}: its inputs alone need {need / 1e9:.3g} GB ({per_example} bytes per "
            f"example); this machine has {memory / 1e9:.3g} GB available and bench keeps batches within half of it"
        )


def check_seq_lengths(task: str, inp: ModelInput, x: Inputs, seq_lengths) -> None:
    """``--seq-lengths`` only for a dynamic time axis, each at most the stored examples' length."""
    if not seq_lengths:
        return
    x = first(x)
    if not inp.dynamic_time:
        raise UserError(
            f"--seq-lengths: task {task!r} has a fixed input length ({x.shape[1]}); "
            "only models with a dynamic time axis (sketch) take a sweep"
        )
    too_long = [n for n in seq_lengths if n > x.shape[1]]
    if too_long:
        raise UserError(f"--seq-lengths: {too_long[0]} is longer than the data's {x.shape[1]} rows (--max-len)")


def check_onnx_file(path: Path, task: str, info: dict | None = None) -> tuple[dict, ModelInput]:
    """Full ``onnx.checker`` check; the model must be an rnnforge export of ``task`` (and of the run
    ``info`` describes). Returns its rnnforge metadata and its input (``checked_export``: the whole file)."""
    model = checked_export(path, task, info)
    return model.meta, model.input


def checked_export(path: Path, task: str, info: dict | None = None) -> OnnxFile:
    """``check_onnx_file``'s checks, its metadata checked against its schema (``run_files.read_onnx``);
    the file with its decoded metadata, inputs and outputs."""
    model = run_files.read_onnx(path)
    if model.meta["rnnforge.task"] != task:
        raise UserError(f"{path} was exported for task {model.meta['rnnforge.task']!r}, but the run is {task!r}")
    for key, value in (info or {}).items():  # same task, another run: other classes or window
        if (
            key in ("class_names", "window", "horizon", "day_types")
            and model.values.get(f"rnnforge.{key}", value) != value
        ):
            raise UserError(
                f"{path} was exported from another {task} run: its {key} differ from the run's "
                "(export this run with 'rnnforge export onnx RUN_DIR')"
            )
    return model


# --- the engines, each in its own process -------------------------------------------------------


def measure_variant(target: BenchTarget, variant: str, settings: BenchSettings, work: Path) -> dict:
    """Time one ONNX Runtime variant in a child process; its rows, samples, session figures,
    providers and (``predictions``) outputs on every stored example."""
    path, name = target.paths[variant], engine_name(variant)
    x = target.eval_set.x
    shapes = {name: a.shape[1:] for name, a in x.items()} if isinstance(x, dict) else x.shape[1:]
    setup = provider_setup(settings, path, shapes, target.run.bench, variant)
    job = Job(
        engine=name,
        model=str(path),
        eval_set=str(target.run.eval_set),
        task=target.spec.name,
        settings=settings.to_dict(),
        setup=setup.to_dict(),
        predictions=str(work / f"{name}.npy"),
    )
    result = run_in_subprocess(job, work)
    return {**result, "setup": setup, "predictions": np.load(job.predictions, allow_pickle=False)}


# --- the result ---------------------------------------------------------------------------------


def assemble(
    target: BenchTarget, settings: BenchSettings, measured: dict[str, dict], baseline: dict, origin: dict
) -> dict:
    """bench.json (``SCHEMA_VERSION``) from each engine's measurements, the TensorFlow baseline and
    the provenance (``export.provenance``: ``origin``)."""
    first = next(iter(measured.values()))
    rows = [*baseline["rows"], *(row for m in measured.values() for row in m["rows"])]
    parity_file = target.run.parity_of(next(iter(target.paths.values())))
    parity = run_files.read_parity(parity_file) if parity_file.is_file() else None
    eval_set = target.eval_set
    return {
        "schema_version": SCHEMA_VERSION,
        "task": target.spec.name,
        "run_dir": str(target.run.path.resolve()),
        "onnx_models": {v: str(p.resolve()) for v, p in target.paths.items()},
        **({"model_note": target.model_note} if target.model_note else {}),
        "provider": {
            "requested": settings.provider,
            "session_providers": first["session_providers"],
            "options": first["setup"].options(),
            "io_binding": first["setup"].io_binding,
            "cuda_graph": settings.cuda_graph,
            "intra_op_threads": settings.threads,
        },
        "machine": machine_info(),
        "versions": {**versions(), "opset": (parity or {}).get("opset")},
        "provenance": origin,
        "settings": {
            "batch_sizes": list(settings.batch_sizes),
            "seq_lengths": list(settings.seq_lengths),
            "variants": list(target.paths),
            "warmup": settings.warmup,
            "runs": settings.runs,
            "max_seconds": settings.max_seconds,
            "target_ci": settings.target_ci,
            "tf_baseline": settings.tf_baseline,
        },
        "eval": {
            "file": str(target.run.eval_set.resolve()),
            "split": eval_set.split,
            "examples": count(eval_set.x),
            "examples_in_split": int(eval_set.meta["examples_in_split"]),
        },
        "tensorflow": {k: v for k, v in baseline.items() if k not in ("rows", "samples", "record")},
        "sessions": {v: measured[engine_name(v)]["session"] for v in target.paths},
        "latency": rows,
        "ratios_over_tf": {name: ratios(rows, name) for name in measured} if baseline["rows"] else {},
        "scenarios": scenarios(rows),
        "accuracy": accuracy(target, {name: m["predictions"] for name, m in measured.items()}),
        "parity": parity,
    }


def accuracy(target: BenchTarget, predictions: dict[str, np.ndarray]) -> dict:
    """Every engine's scores on the stored examples, against TensorFlow's stored outputs."""
    eval_set = target.eval_set
    for name, pred in predictions.items():
        if pred.shape != eval_set.reference.shape:
            raise UserError(
                f"{target.run.eval_set}: TensorFlow's stored outputs are {list(eval_set.reference.shape)}, {name} gives "
                f"{list(pred.shape)}; re-run 'rnnforge export onnx {target.run.path}'"
            )
    scores = score_engines(predictions, eval_set.reference, target.spec, eval_set.x, eval_set.y, eval_set.info)
    every = every_output_scores(target)
    return {
        "split": eval_set.split,
        "examples": count(eval_set.x),
        **scores,
        **({"every_output": every} if every else {}),
    }


def every_output_scores(target: BenchTarget) -> dict | None:
    """A model with more outputs than the first (the forecaster's ``quantiles`` beside its median
    ``forecast``): the task's scores of all of them (pinball loss, interval coverage and width), from
    one ONNX Runtime CPU session in this process on the first variant. The timed engines return the
    first output only; ``None`` for a model of one output."""
    import onnxruntime as ort

    from rnnforge.core.arrays import feeds

    variant, path = next(iter(target.paths.items()))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if len(session.get_outputs()) < 2:
        return None
    eval_set = target.eval_set
    outputs = session.run(None, feeds(eval_set.x, [i.name for i in session.get_inputs()]))
    scores = target.spec.score(eval_set.x, eval_set.y, outputs, eval_set.info)
    return {"engine": f"onnxruntime CPU ({variant})", "outputs": [o.name for o in session.get_outputs()], **scores}


#: What bench writes into bench/ (beside what 'bench load' keeps there): one set, replaced as a whole.
OUTPUTS = (
    "latency_vs_batch.png",
    "latency_distribution.png",
    "throughput_vs_latency.png",
    "latency_vs_seq_len.png",
    "report.md",
    "report.html",
    "bench.json",
)


def check_output_folder(run: RunDir) -> None:
    """Before any work: bench/ can be written, and none of the files bench writes there is a folder."""
    fileio.check_writable(run.bench, "bench's output folder")
    for name in (*OUTPUTS, run.tf_timing.name):
        if (run.bench / name).is_dir():
            raise UserError(f"bench's output {run.bench / name} is a folder, where bench writes a file: move it away")


def write_outputs(run: RunDir, result: dict, samples: dict[str, list], tf_record: dict | None) -> None:
    """Plots, bench.json, report.md/html and the TensorFlow timing just measured, as one set: all
    written into a hidden folder beside bench/ first, then moved into bench/ (bench.json last), so
    a failure or Ctrl-C on the way leaves bench/ with its earlier results (``fileio.staged_files``)."""
    from rnnforge.export.report import bench_markdown, write_report

    rows = result["latency"]
    full = [r for r in rows if r["seq_len"] is None]
    with fileio.staged_files(run.bench, replaces=OUTPUTS, last=("bench.json",)) as out:
        plots.latency_vs_batch(full, out / "latency_vs_batch.png")
        plots.latency_distribution(samples, out / "latency_distribution.png", result["settings"]["batch_sizes"][0])
        plots.throughput_vs_latency(full, out / "throughput_vs_latency.png")
        if result["settings"]["seq_lengths"]:
            plots.latency_vs_seq_len([r for r in rows if r["seq_len"] is not None], out / "latency_vs_seq_len.png")
        fileio.write_json(out / "bench.json", result)
        write_report(out / "report.md", bench_markdown(result, run), title=f"rnnforge report: {result['task']}")
        if tf_record is not None:
            fileio.write_json(out / run.tf_timing.name, tf_record)
