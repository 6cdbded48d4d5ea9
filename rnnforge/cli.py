"""The ``rnnforge`` command line: ``train``, ``export onnx``, ``bench`` and ``demo``.

Sub-commands import TensorFlow, Ray and ONNX Runtime inside their own bodies, so ``rnnforge
--help`` and every ``--help`` load only click. Bad input ends with one line, ``error: ...``,
naming the argument or file, and a non-zero exit; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from rnnforge.core.config import TrainConfig, declarations, value_type
from rnnforge.core.console import VERBOSE_ENV
from rnnforge.core.errors import MissingStackError, UserError, on_ctrl_c
from rnnforge.export.settings import DEFAULT_EVAL_BYTES, DEFAULT_EVAL_EXAMPLES, LIMITS, PROVIDERS, TF_BASELINES
from rnnforge.models import TASKS

#: Modules of the ``[train]`` extra: a serving install (``pip install rnnforge``) has none of them.
TRAINING_STACK = frozenset(
    (
        "tensorflow",
        "tf_keras",
        "tensorflow_datasets",
        "ray",
        "tf2onnx",
        "onnxconverter_common",
        "pandas",
        "pyarrow",
        "imageio",
    )
)


def _batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 1,32,256, got {value!r}") from None
    if param.name == "seq_lengths" and not sizes:
        return ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"batch sizes must be positive integers, got {value!r}")
    return sizes


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Also show the machinery's output: TensorFlow's start-up lines, Ray's notices, every worker's output.",
)
@click.version_option(package_name="rnnforge")
def cli(debug: bool, verbose: bool) -> None:
    """Train sequence models on Ray, export them to ONNX, and benchmark them on ONNX Runtime.

    Tasks: sketch (drawing classifier), forecast (next 7 days of a daily series), video (clip
    classifier). Typical path:

    \b
        rnnforge train sketch --run-dir runs/sketch
        rnnforge export onnx runs/sketch
        rnnforge bench runs/sketch
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # read by this process and passed to every Ray worker


class _DeclaredOption(click.Option):
    """An option generated from its ``TrainConfig`` declaration. ``--help`` shows its default in
    each task and its range; the task specs are read only when help is shown, so ``rnnforge
    --help`` stays light."""

    def __init__(self, *args, demo: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.demo = demo

    def get_help_record(self, ctx: click.Context) -> tuple[str, str]:
        spec, text = super().get_help_record(ctx)
        default = _default_text(self.name, self.demo)
        extra = "; ".join(filter(None, (default and f"default: {default}", declarations()[self.name].bound_text())))
        return spec, f"{text}  [{extra}]" if extra else text


def _default_text(name: str, demo: bool = False) -> str:
    """``15``, or ``sketch 15, forecast 80, video 16`` where the tasks differ; the declaration's
    ``default_text`` where the default is None (unset)."""
    from rnnforge.models.resolve import defaults_per_task

    values = defaults_per_task(name, demo)
    unset = declarations()[name].default_text
    shown = {task: unset if value is None else "" if value is False else str(value) for task, value in values.items()}
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{task} {text or '-'}" for task, text in shown.items())


class _WorkerCount(click.ParamType):
    """``--workers``: ``N`` workers, or ``MIN-MAX`` for an elastic group (an ``(MIN, MAX)`` tuple)."""

    name = "N|MIN-MAX"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, tuple)):
            return value
        try:
            return int(value)
        except ValueError:
            pass
        low, _, high = str(value).partition("-")
        try:
            return int(low), int(high)
        except ValueError:
            self.fail(f"{value!r} is not a valid integer (nor MIN-MAX such as 1-4)", param, ctx)


def _elastic_workers(options: dict) -> dict:
    """``options`` with ``--workers MIN-MAX`` split into ``workers`` (MAX) and ``min_workers`` (MIN)."""
    if not isinstance(options.get("workers"), tuple):
        return options
    low, high = options["workers"]
    if low < 1:
        raise UserError(f"--workers {low}-{high}: MIN must be at least 1 (an elastic group goes on with MIN workers)")
    if low > high:
        raise UserError(f"--workers {low}-{high}: MIN is more than MAX")
    if options.get("min_workers") is not None:
        raise UserError(f"--workers {low}-{high} and --min-workers {options['min_workers']}: give the minimum once")
    return {**options, "workers": high, "min_workers": low}


def _declared_option(name: str, *, demo: bool = False, help: str | None = None):
    """The click option of ``TrainConfig.<name>`` (``--name``), made from its declaration."""
    option = declarations()[name]
    flag = "--" + name.replace("_", "-")
    text = help or option.help
    if option.where():
        text = f"{option.where()}: {text if text[:2].isupper() else text[0].lower() + text[1:]}"
    if value_type(name) is bool:
        decls = [f"{flag}/{option.off_switch}"] if option.off_switch else [flag]
        return click.option(*decls, cls=_DeclaredOption, demo=demo, is_flag=True, default=None, help=text)
    kind = click.Choice(option.choices) if option.choices else {int: int, float: float}.get(value_type(name), str)
    if name == "workers" and not demo:
        kind = _WorkerCount()
    return click.option(flag, cls=_DeclaredOption, demo=demo, type=kind, help=text)


def _train_options(command):
    """Every ``TrainConfig`` option ``rnnforge train`` takes, in declaration order."""
    for name in reversed([name for name, option in declarations().items() if option.cli]):
        command = _declared_option(name)(command)
    return command


@cli.command(
    help="Train TASK with Ray Train (data-parallel workers, MultiWorkerMirroredStrategy).\n\n"
    f"TASK is one of: {', '.join(TASKS)}. An option whose help starts with task names (e.g. "
    "'forecast:') applies to those tasks only, and the others refuse it; a dataset after the task "
    "(e.g. 'forecast csv:') means that dataset only."
)
@click.argument("task", type=click.Choice(TASKS), metavar="TASK")
@_train_options
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the run's artifacts go.  [default: runs/TASK]",
)
@click.option("--address", help="Ray cluster to join ('auto' inside 'ray job submit'); default: start a local Ray.")
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --run-dir instead of refusing.")
def train(task: str, run_dir: Path | None, address: str | None, overwrite: bool, **options) -> None:
    from rnnforge.cluster.launch import check_data, not_started, preflight
    from rnnforge.cluster.launch import train as run_training
    from rnnforge.cluster.storage import prepare_run_dir
    from rnnforge.models.resolve import resolve_config

    config = resolve_config(task, _elastic_workers(options))
    run_dir = run_dir or Path("runs") / task
    with on_ctrl_c(not_started(run_dir)):
        preflight(config, run_dir, address)  # no data, Ray or TensorFlow yet: the error is all the user reads
        data = check_data(config) if overwrite else None  # bad data must fail before --overwrite removes a finished run
        run_dir = prepare_run_dir(run_dir, overwrite, config.storage_path)
    metrics = run_training(config, run_dir, address=address, data=data)
    _print_devices(metrics)
    _print_scores(metrics)
    click.echo(f"run dir: {run_dir}")


def parse_train_args(args: Sequence[str]) -> TrainConfig:
    """The checked config that ``rnnforge train ARGS`` (TASK, then options) would train with;
    ``--run-dir``, ``--address`` and ``--overwrite`` are accepted and left out."""
    from rnnforge.models.resolve import resolve_config

    with train.make_context("train", list(args)) as ctx:
        params = dict(ctx.params)
    task = params.pop("task")
    for name in ("run_dir", "address", "overwrite"):
        params.pop(name)
    return resolve_config(task, _elastic_workers(params))


def _print_devices(metrics: dict) -> None:
    """Where the GPUs went, one row per worker, when any worker was given one."""
    from rnnforge.export.report import device_table

    if any(record["assigned_gpus"] for record in metrics.get("devices", [])):
        for line in device_table(metrics["devices"]):
            click.echo(line)


def _print_scores(metrics: dict) -> None:
    from rnnforge.core.scores import format_scores

    for split in ("valid", "test"):
        if split in metrics:
            click.echo(f"{split}: {format_scores(metrics[split])}")
    for name in metrics.get("companions", []):  # e.g. the ensemble a distilled forecaster learnt from
        for split in ("valid", "test"):
            if split in metrics[name]:
                click.echo(f"{name} {split}: {format_scores(metrics[name][split])}")


@cli.group()
def export() -> None:
    """Export a trained run."""


@export.command("onnx")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--opset", type=int, help="ONNX opset, 17 or 18 (tf2onnx 1.17 refuses 19+).  [default: the task's]")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="ONNX file.  [default: RUN_DIR/model.onnx]"
)
@click.option("--atol", type=float, help="Parity tolerance: max abs difference ONNX Runtime vs TensorFlow.")
@click.option("--fp16", is_flag=True, help="Also write the fp16 variant (model.fp16.onnx), with its own parity gate.")
@click.option(
    "--int8",
    is_flag=True,
    help="Also write the int8 variant (model.int8.onnx, onnxruntime.quantization), gated on the task's accuracy.",
)
@click.option(
    "--eval-examples",
    type=click.IntRange(min=1),
    help="Held-out examples the agreement gates are judged on (--int8: the evaluation split, then the "
    "validation split, then fresh draws of a generated dataset), and stored in RUN_DIR/eval.npz (evenly "
    f"spaced over the evaluation split) for 'bench'.  [default: {DEFAULT_EVAL_EXAMPLES:,}: the fewest that can "
    "establish 99.9 % agreement (95 % lower bound); eval.npz stores fewer if their inputs pass "
    f"{DEFAULT_EVAL_BYTES // 2**20} MiB]",
)
@click.option(
    "--fuse-members",
    is_flag=True,
    help="Forecast ensembles: export the members fused, one LSTM/GRU per layer with block-diagonal weights "
    "(one recurrent kernel per layer on a GPU instead of one per member); parity against the averaged ensemble.",
)
@click.option(
    "--mlflow-run-id",
    help="Log the ONNX files into this MLflow run (tracking URI: RUN_DIR/mlflow.json's, else "
    "MLFLOW_TRACKING_URI).  [default: the run RUN_DIR/mlflow.json records, if any]",
)
def export_onnx(
    run_dir: Path,
    opset: int | None,
    output: Path | None,
    atol: float | None,
    fp16: bool,
    int8: bool,
    eval_examples: int | None,
    mlflow_run_id: str | None,
    fuse_members: bool,
) -> None:
    """Convert RUN_DIR's model with tf2onnx, check parity on ONNX Runtime, and store the
    evaluation examples (eval.npz) that 'bench' needs, so it runs without the dataset or TensorFlow."""
    from rnnforge.export.onnx_export import export_onnx as run_export
    from rnnforge.export.parity import describe_top1

    with on_ctrl_c(
        f"interrupted: the export of {run_dir} stopped; its trained model is untouched and each file already "
        f"written is whole; run 'rnnforge export onnx {run_dir}' again for a complete, consistent export"
    ):
        parity = run_export(
            run_dir,
            opset=opset,
            output=output,
            atol=atol,
            fp16=fp16,
            int8=int8,
            eval_examples=eval_examples,
            mlflow_run_id=mlflow_run_id,
            fuse_members=fuse_members,
        )
    click.echo(
        f"parity: max abs diff {parity['max_abs_diff']:.2e} (atol {parity['atol']:g})"
        + (f", top-1 agreement {describe_top1(parity)}" if "top1_agreed" in parity else "")
    )
    stored = parity["eval_set"]
    click.echo(f"onnx model: {parity['onnx_path']}")
    if "int8" in parity:
        int8_record = parity["int8"]
        agreement = f": top-1 agreement {describe_top1(int8_record)}" if "top1_gate" in int8_record else ""
        click.echo(f"int8 model: {int8_record['onnx_path']} (accuracy gate passed{agreement})")
    for name in ("ensemble",):
        if name in parity:
            fused = parity[name].get("fused_members")
            click.echo(
                f"{name} model: {parity[name]['onnx_path']} (parity: max abs diff {parity[name]['max_abs_diff']:.2e}"
                + (f"; {fused} members fused" if fused else "")
                + ")"
            )
    click.echo(
        f"eval set: {stored['path']} ({stored['examples']} of {stored['examples_in_split']} examples, "
        f"{stored['bytes'] / 1e6:.1f} MB)"
    )


class _DefaultCommandGroup(click.Group):
    """A group whose first argument, when it is no sub-command, goes to ``default_command``."""

    default_command = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _provider_options(ctx, param, values: tuple[str, ...]) -> dict:
    options = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE such as cudnn_conv_algo_search=HEURISTIC, got {value!r}")
        options[key.strip()] = setting.strip()
    return options


def _warmup(ctx, param, value: str) -> int | None:
    """``--warmup auto`` (None: until stable) or a count of untimed calls."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"expected auto or a number of calls, got {value!r}") from None
    if count < 0:
        raise click.BadParameter(f"expected auto or a number of calls >= 0, got {count}")
    return count


def _limit(name: str) -> str:
    """`` At most N (why).``: a bench option's limit (``export.settings.LIMITS``) for its --help."""
    limit, why = LIMITS[name]
    return f" At most {limit} {why}."


@cli.group(cls=_DefaultCommandGroup)
def bench() -> None:
    """Benchmark ONNX Runtime beside TensorFlow, or compare two results. Needs only the run dir
    and ONNX Runtime: TensorFlow is measured where it is installed, else its recorded timing is used.

    \b
        rnnforge bench RUN_DIR [options]          one run (same as 'bench run')
        rnnforge bench --all RUNS_DIR [options]   every exported run under RUNS_DIR, one report
        rnnforge bench compare A.json B.json      ratios B/A; exit 5 when a figure regressed
        rnnforge bench load RUN_DIR [options]     the model as a service: concurrency, request
                                                  rates, dynamic batching, --slo-p99-ms search
    """


@bench.command("run")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--all", "all_runs", is_flag=True, help="RUN_DIR is a folder of runs: bench each, write one report.")
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="cpu",
    show_default=True,
    help="ONNX Runtime execution provider; refused if the session does not really use it.",
)
@click.option(
    "--variants",
    default="fp32",
    show_default=True,
    help="Comma-separated: fp32 (model.onnx), fp16 (model.fp16.onnx from 'export onnx --fp16'), "
    "int8 (model.int8.onnx from 'export onnx --int8'), ensemble (model.ensemble.onnx: the ensemble a "
    "forecaster trained with --distil keeps beside its student).",
)
@click.option(
    "--batch-sizes", default="1,32,256", show_default=True, callback=_batch_sizes, help="Batch sizes to time."
)
@click.option("--seq-lengths", default="", callback=_batch_sizes, help="sketch: also time these input lengths (rows).")
@click.option(
    "--warmup",
    default="auto",
    show_default=True,
    metavar="auto|N",
    callback=_warmup,
    help="Untimed runs first: auto warms up until the latency is stable (three windows of 10 calls whose "
    "medians agree within 5 %, at most --max-seconds), or a fixed count." + _limit("warmup"),
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Timed runs per batch size and engine." + _limit("runs"),
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Stop timing one batch size after this long (at least 10 runs)." + _limit("max_seconds"),
)
@click.option(
    "--target-ci",
    type=click.FloatRange(min=0, min_open=True),
    help="Time each row until its p50's 95 % interval lies within this fraction of the p50 (0.02: 2 %), "
    "or --max-seconds end it; --runs does not cap it then." + _limit("target_ci"),
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Intra-op threads for both engines." + _limit("threads") + "  [default: all cores]",
)
@click.option(
    "--io-binding/--no-io-binding",
    default=None,
    help="Bind inputs and outputs on the device (IOBinding).  [default: on for cuda/tensorrt]",
)
@click.option("--cuda-graph", is_flag=True, help="cuda: capture a CUDA graph per input shape (enable_cuda_graph).")
@click.option(
    "--provider-option",
    "provider_options",
    multiple=True,
    callback=_provider_options,
    metavar="KEY=VALUE",
    help="Option for the requested provider (repeatable), e.g. cudnn_conv_algo_search=HEURISTIC.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file.  [default: RUN_DIR/model.onnx]",
)
@click.option(
    "--tf-baseline",
    type=click.Choice(TF_BASELINES),
    default="auto",
    show_default=True,
    help="TensorFlow's figures: auto measures them where TensorFlow is installed, else uses the last "
    "recorded timing (bench/tf_timing.json, machine named in the report), else leaves them out; "
    "measure or recorded insist on one; none leaves TensorFlow out.",
)
def bench_run(run_dir: Path, all_runs: bool, variants: str, model_path: Path | None, **options) -> None:
    """Time RUN_DIR's ONNX model on ONNX Runtime beside TensorFlow (each engine in its own
    process) and score every engine on the examples 'export onnx' stored."""
    from rnnforge.export.bench import run_bench, run_bench_all
    from rnnforge.export.report import summary_table
    from rnnforge.export.settings import BenchSettings

    settings = BenchSettings(variants=tuple(v.strip() for v in variants.split(",") if v.strip()), **options)
    again = "run the same 'rnnforge bench' command again"
    if all_runs:
        if model_path:
            raise click.BadParameter("--model names one ONNX file; it cannot go with --all", param_hint="'--model'")
        with on_ctrl_c(
            f"interrupted: 'bench --all {run_dir}' stopped; runs benched before it keep their new results, the "
            f"others their earlier ones, and no summary report was written; {again}"
        ):
            report, results = run_bench_all(run_dir, settings)
        click.echo(summary_table(results))
        click.echo(_report_line(report))
        return
    with on_ctrl_c(
        f"interrupted: the bench of {run_dir} stopped before writing its results; its bench/ folder keeps "
        f"the earlier ones; {again}"
    ):
        result = run_bench(run_dir, settings, model_path)
    click.echo(result["summary"])
    click.echo(_report_line(Path(result["report"])))


def _report_line(markdown: Path) -> str:
    """``report: DIR/report.md (HTML: DIR/report.html)``: every report is written in both forms."""
    return f"report: {markdown} (HTML: {markdown.with_suffix('.html')})"


@bench.command("compare")
@click.argument("baseline", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--metric",
    type=click.Choice(("p50", "p90", "p95", "p99", "mean", "throughput")),
    default="p50",
    show_default=True,
    help="The figure the gate checks.",
)
@click.option(
    "--threshold",
    type=float,
    default=1.10,
    show_default=True,
    help="Fail when CANDIDATE is worse than BASELINE by more than this factor.",
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the table as Markdown here."
)
def bench_compare(baseline: Path, candidate: Path, metric: str, threshold: float, output: Path | None) -> None:
    """Ratios CANDIDATE / BASELINE for every shared row of two bench.json (or bench_all.json) files;
    for two 'bench load' results (load.json or serving.json), the max rate within the SLO."""
    from rnnforge.core import fileio
    from rnnforge.core.errors import RegressionError
    from rnnforge.export.compare import compare

    if output:
        fileio.check_writable(output, "--output", directory=False)
    table, regressions = compare(baseline, candidate, metric, threshold)
    click.echo(table)
    if output:
        fileio.write_text(output, table)
    if regressions:
        from rnnforge.export.load_report import is_load_file

        gated = "the max rate within the SLO" if is_load_file(baseline) or is_load_file(candidate) else metric
        raise RegressionError(
            f"{len(regressions)} row(s) regressed beyond {threshold:g}x on {gated}: "
            + "; ".join(regressions[:3])
            + ("; ..." if len(regressions) > 3 else "")
        )


def _numbers(ctx, param, value: str) -> tuple:
    kind = int if param.name == "concurrency" else float
    try:
        return tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError:
        example = "1,2,4" if kind is int else "100,250.5"
        raise click.BadParameter(f"expected comma-separated numbers such as {example}, got {value!r}") from None


@bench.command("load")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--concurrency",
    default="",
    callback=_numbers,
    help="Closed loop: this many clients, e.g. 1,2,4.  [default: 1,2,4 unless --request-rate or --slo-p99-ms]",
)
@click.option(
    "--request-rate",
    "request_rates",
    default="",
    callback=_numbers,
    help="Open loop: Poisson arrivals at these requests/s, e.g. 200,400; latency from each scheduled send time.",
)
@click.option(
    "--slo-p99-ms",
    type=float,
    help="Search variants, threads, instances, max batch and queue delay for the highest rate with p99 within "
    "this; write bench/serving.json.",
)
@click.option(
    "--variant",
    type=click.Choice(("fp32", "fp16", "int8")),
    default="fp32",
    show_default=True,
    help="The model measured (without --slo-p99-ms).",
)
@click.option("--variants", default="", help="--slo-p99-ms: the variants searched.  [default: every one the run has]")
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="cpu",
    show_default=True,
    help="ONNX Runtime provider (--slo-p99-ms on cpu also tries cuda where it is usable).",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads per instance.  [default: all cores]")
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Sessions serving side by side, one thread each.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Dynamic batching: run at most this many queued requests as one batch.",
)
@click.option(
    "--max-queue-delay-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Dynamic batching: hold the oldest request this long for the batch to fill.",
)
@click.option(
    "--max-windows",
    type=click.IntRange(min=3),
    default=6,
    show_default=True,
    help="Measurement windows per point at most (stable: the last 3 agree within --stability).",
)
@click.option(
    "--stability",
    type=click.FloatRange(min=0.01),
    default=0.10,
    show_default=True,
    help="Stable: the last 3 windows' throughput and p99 have max/min within 1 + this.",
)
@click.option(
    "--time-limit",
    "time_limit_s",
    type=click.FloatRange(min=1),
    default=240.0,
    show_default=True,
    help="--slo-p99-ms: seconds the whole search may take, the confirming run included.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Poisson arrivals.")
def bench_load(run_dir: Path, variants: str, **options) -> None:
    """Load-test RUN_DIR's ONNX model as a service (one stored example per request): closed loop,
    open loop and dynamic batching; with --slo-p99-ms, the serving configuration to ship."""
    from rnnforge.export.load_run import LoadSettings, run_load

    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    result = run_load(run_dir, LoadSettings(variants=chosen, **options))
    click.echo(result["summary"])
    click.echo(_report_line(Path(result["report"])))


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Directory for every task's run and the combined report.",
)
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated tasks to run.")
@_declared_option("workers", demo=True, help="Ray Train workers per task.")
@_declared_option("epochs", demo=True, help="Epochs of every task (early stopping may end sooner).")
def demo(out: Path, tasks: str, workers: int | None, epochs: int | None) -> None:
    """Train, export and benchmark every task on its embedded dataset; write one report."""
    from rnnforge.demo import run_demo

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown task(s) {', '.join(unknown) or '(none)'}: expected some of {', '.join(TASKS)}",
            param_hint="'--tasks'",
        )
    report = run_demo(out, names, workers=workers, epochs=epochs)
    click.echo(_report_line(report))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the CLI and turns user errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in args:  # accepted after the sub-command too: 'rnnforge train sketch --verbose'
        args = ["--verbose", *(a for a in args if a != "--verbose")]
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="rnnforge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if debug or package not in TRAINING_STACK:
            raise
        error = MissingStackError(
            f"this command needs {package}, part of the training stack, which this install lacks: "
            'pip install "rnnforge[train]" (a plain install is the serving half: bench and bench compare)'
        )
        click.echo(f"error: {error}", err=True)
        return error.exit_code
    except UserError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
