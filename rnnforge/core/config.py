"""Every ``rnnforge train`` option, declared once: the fields of the frozen ``TrainConfig``.

A field is one option: its Python type, its default for every task (a task's ``spec.defaults``
in ``models/<task>.py`` overrides it for that task), and, in its ``Option`` metadata, the help
text, the range (and, for every number, a limit with its reason) or the choices, and the tasks
(and datasets) it applies to. Everything else is generated from these declarations: ``rnnforge train``'s click options and its ``--help``
defaults per task (``rnnforge.cli``), the merge of defaults and the refusal of options that do
not apply (``rnnforge.models.resolve.resolve_config``), and the range and choice checks, which
run whenever a ``TrainConfig`` is made. A field that does not apply to the config's task (or
its dataset) is ``None``, and never written to config.json::

    config = resolve_config("forecast", {"epochs": 3})
    config.epochs, config.window, config.max_len        # 3, 56, None
    config.to_dict()                                     # config.json's fields; from_dict reverses it
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rnnforge.core.errors import UserError


@dataclass(frozen=True)
class Option:
    """What the CLI and the checks know about one ``TrainConfig`` field besides its type and default.

    ``tasks`` maps each task the option applies to onto the datasets it concerns (``()``: every
    dataset of the task); ``None`` means every task. Bounds are inclusive unless marked open.
    """

    help: str
    tasks: Mapping[str, tuple[str, ...]] | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    open_maximum: bool = False
    reason: str = ""  # why the range is what it is, appended to its error
    limit: float | None = None  # a sane upper bound beyond the range: refuses typos before Ray starts
    why: str = ""  # why the limit is where it is, in --help and the error
    choices: tuple[str, ...] = ()
    off_switch: str = ""  # a boolean option's "off" form, e.g. "--in-memory" for --streaming
    default_text: str = ""  # --help's default where the value is None, e.g. "RUN_DIR/checkpoints"
    cli: bool = True  # False: set by code and tests, not an option of rnnforge train

    def applies_to(self, task: str, dataset: str | None = None) -> bool:
        """Whether the option concerns ``task`` and, when given, its ``dataset``."""
        if self.tasks is None:
            return True
        if task not in self.tasks:
            return False
        return dataset is None or not self.tasks[task] or dataset in self.tasks[task]

    def where(self) -> str:
        """The tasks and datasets it concerns, as --help starts its text: ``sketch quickdraw, video ucf101``."""
        if self.tasks is None:
            return ""
        return ", ".join(" ".join((task, *datasets)) for task, datasets in self.tasks.items())

    def range_text(self) -> str:
        """``at least 1``, ``positive``, ``in [0, 1)``, ``between 1 and 7``; empty without bounds."""
        lo, hi = (None if x is None else _number(x) for x in (self.minimum, self.maximum))
        if lo is not None and hi is not None:
            if self.open_minimum or self.open_maximum:
                return f"in {'(' if self.open_minimum else '['}{lo}, {hi}{')' if self.open_maximum else ']'}"
            return f"between {lo} and {hi}"
        if lo is not None:
            return ("positive" if lo == "0" else f"greater than {lo}") if self.open_minimum else f"at least {lo}"
        if hi is not None:
            return f"below {hi}" if self.open_maximum else f"at most {hi}"
        return ""

    def limit_text(self) -> str:
        """``at most 32 (why)``; empty without a limit."""
        return "" if self.limit is None else " ".join(filter(None, (f"at most {_number(self.limit)}", self.why)))

    def bound_text(self) -> str:
        """The range and the limit, as --help shows them: ``at least 1; at most 1024 (why)``."""
        return "; ".join(filter(None, (self.range_text(), self.limit_text())))

    def in_range(self, value: float) -> bool:
        lo, hi = self.minimum, self.maximum
        above = lo is None or (value > lo if self.open_minimum else value >= lo)
        below = hi is None or (value < hi if self.open_maximum else value <= hi)
        return above and below

    def check(self, name: str, value: Any) -> None:
        """Refuse a ``value`` outside the choices or the range, naming the option ``--name``."""
        flag = "--" + name.replace("_", "-")
        if self.choices and value not in self.choices:
            raise UserError(f"{flag} must be one of {', '.join(self.choices)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
        if not self.in_range(value):
            reason = f" {self.reason}" if self.reason else ""
            raise UserError(f"{flag} must be {self.range_text()}{reason}, got {value}")
        if self.limit is not None and value > self.limit:
            raise UserError(f"{flag} must be {self.limit_text()}, got {value}")


def _number(value: float) -> str:
    """A bound as --help and errors show it: ``4294967295``, ``0.5``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def option(default: Any, help: str, **declaration: Any) -> Any:
    """A ``TrainConfig`` field: ``default`` for every task, and its ``Option`` declaration."""
    return field(default=default, metadata={"option": Option(help, **declaration)})


_SKETCH_QUICKDRAW = {"sketch": ("quickdraw",)}
#: Shared limits (``Option.limit``): each refuses a typo before Ray starts, never a run anyone would make.
MAX_WORKERS = 1024
_WORKERS_REASON = "(a bound on typos: every worker is a Ray actor with its own TensorFlow and data shard)"
MAX_EPOCHS = 100_000
_EPOCHS_REASON = "epochs (a bound on typos: no run here needs more than a few hundred)"
MAX_ENSEMBLE = 32
_FORECAST = {"forecast": ()}
_VIDEO = {"video": ()}


def parse_categories(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--categories``: ``"cat, dog"`` (or a list, as config.json keeps it) -> ``("cat", "dog")``;
    empty -> ``None`` (every category)."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else value
    kept = tuple(str(name).strip() for name in names if str(name).strip())
    return kept or None


MAX_QUANTILES = 19


def parse_quantiles(value: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """``--quantiles``: ``"0.1,0.5,0.9"`` (or a list, as config.json keeps it) -> ``(0.1, 0.5, 0.9)``;
    empty, ``none`` or ``off`` -> ``None`` (a point forecast). Refuses, naming the option, a level
    that is not a number, outside (0, 1), out of increasing order, a list without the median 0.5
    (the point forecast) and one longer than ``MAX_QUANTILES``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(item).strip() for item in items if str(item).strip()]
    if not items or (len(items) == 1 and items[0].lower() in ("none", "off")):
        return None
    levels = []
    for item in items:
        try:
            level = float(item)
        except ValueError:
            raise UserError(f"--quantiles: {item!r} is not a number (expected levels such as 0.1,0.5,0.9)") from None
        if not 0 < level < 1 or not math.isfinite(level):
            raise UserError(f"--quantiles: {item} is not a level in (0, 1)")
        if levels and level <= levels[-1]:
            raise UserError(f"--quantiles must increase: {item} follows {levels[-1]:g}")
        levels.append(round(level, 6))
    if 0.5 not in levels:
        raise UserError("--quantiles must include 0.5: the median is the served point forecast")
    if len(levels) > MAX_QUANTILES:
        raise UserError(
            f"--quantiles: {len(levels)} levels, at most {MAX_QUANTILES} (each is an output per horizon day of every member)"
        )
    return tuple(levels)


@dataclass(frozen=True)
class TrainConfig:
    """One training run's options (``rnnforge train TASK --OPTION VALUE ...``), checked when made.

    Read attributes (``config.epochs``); ``dataclasses.replace(config, epochs=3)`` makes a changed,
    re-checked copy. ``to_dict``/``from_dict`` give the plain data that config.json and Ray's
    ``train_loop_config`` carry.
    """

    task: str
    dataset: str | None = option(None, "Dataset to train on.")
    data_dir: str | None = option(
        None,
        "Files of a real dataset (a folder or, for forecast csv/cta_ridership, the CSV).",
        tasks={"sketch": ("quickdraw",), "forecast": ("cta_ridership", "csv"), "video": ("folder", "ucf101")},
    )
    workers: int = option(
        2,
        "Ray Train workers; MIN-MAX: an elastic group (--min-workers).",
        minimum=1,
        limit=MAX_WORKERS,
        why=_WORKERS_REASON,
    )
    cpus_per_worker: int = option(
        1,
        "CPUs reserved for each worker.",
        minimum=1,
        limit=1024,
        why="(a bound on typos: Ray reserves them on one node)",
    )
    gpus_per_worker: float = option(
        0,
        "GPUs per worker; > 0 trains on GPUs.",
        minimum=0,
        limit=16,
        why="(a worker runs on one node, and no node holds more GPUs)",
    )
    mixed_precision: bool = option(False, "GPU workers: compute in float16, keep float32 weights (mixed_float16).")
    allow_cpu_fallback: bool = option(
        False, "GPU workers whose TensorFlow sees no GPU train on the CPU (and say so) instead of stopping the run."
    )
    epochs: int = option(
        20, "Maximum epochs (early stopping may end sooner).", minimum=1, limit=MAX_EPOCHS, why=_EPOCHS_REASON
    )
    batch_size: int = option(
        64,
        "Per-worker batch size; the global batch is this x workers.",
        minimum=1,
        limit=65536,
        why="(a bound on typos: the global batch is this x --workers)",
    )
    learning_rate: float = option(
        2e-3,
        "Peak learning rate of Adam.",
        minimum=0,
        limit=1,
        open_minimum=True,
        why="(Adam moves each weight by about the rate per step: above 1 it diverges)",
    )
    lr_schedule: str = option("cosine", "Learning-rate schedule.", choices=("constant", "cosine", "exponential"))
    clipnorm: float = option(
        1.0,
        "Clip gradients to this global norm (0 = off).",
        minimum=0,
        limit=1e6,
        why="(a norm above that clips nothing: use 0 for off)",
    )
    dropout: float = option(
        0.0,
        "Dropout on the recurrent layers' inputs (never recurrent_dropout).",
        minimum=0,
        maximum=1,
        open_maximum=True,
    )
    rnn: str = option("lstm", "Recurrent cell (GRU uses reset_after=True).", choices=("lstm", "gru"))
    units: int | None = option(
        None,
        "Units of each recurrent layer.",
        minimum=1,
        limit=4096,
        why="(an LSTM layer of 4096 units holds 134M weights, 2 GB with Adam's state)",
    )
    patience: int = option(
        5,
        "Early-stopping patience on val_loss, in epochs (0 = off).",
        minimum=0,
        limit=MAX_EPOCHS,
        why=_EPOCHS_REASON,
    )
    max_failures: int = option(
        0,
        "Worker-group restarts from the last checkpoint.",
        minimum=0,
        limit=100,
        why="(a run that fails more often has a cause to fix, not to retry)",
    )
    storage_path: str | None = option(
        None,
        "Checkpoints and Ray results: a directory every node shares, or s3://, gs:// URI.",
        default_text="RUN_DIR/checkpoints",
    )
    checkpoint_every: int = option(
        1,
        "Epochs between checkpoints (the end always gets one).",
        minimum=1,
        limit=MAX_EPOCHS,
        why=_EPOCHS_REASON,
    )
    seed: int = option(
        42, "Random seed for weights and shuffling.", minimum=0, maximum=2**32 - 1, reason="(numpy's seed range)"
    )
    data_seed: int = option(
        0,
        "Seed of the embedded synthetic datasets.",
        minimum=0,
        maximum=2**32 - 1,
        reason="(numpy's seed range)",
        cli=False,
    )
    # sketch
    categories: tuple[str, ...] | None = option(
        None,
        "Comma-separated categories to use.",
        tasks={**_SKETCH_QUICKDRAW, "video": ("ucf101",)},
        default_text="all",
    )
    max_per_class: int | None = option(
        None,
        "Cap training drawings per category.",
        tasks=_SKETCH_QUICKDRAW,
        minimum=1,
        limit=10**9,
        why="(QuickDraw's largest category holds under 10^6 drawings)",
        default_text="no cap",
    )
    skip_bad_records: bool = option(False, "Skip and count bad drawings instead of failing.", tasks=_SKETCH_QUICKDRAW)
    streaming: bool | None = option(
        None,
        "Stream TFDS-prepared shards to the workers, or read --data-dir into memory.",
        tasks=_SKETCH_QUICKDRAW,
        off_switch="--in-memory",
        default_text="streaming only when downloading",
    )
    tfds_dir: str | None = option(
        None,
        "Where TFDS keeps prepared data (with --streaming).",
        tasks=_SKETCH_QUICKDRAW,
        default_text="~/tensorflow_datasets",
    )
    length_buckets: int | None = option(
        None,
        "When streaming, batch drawings of similar length in N buckets (1 = pad every drawing to --max-len).",
        tasks={"sketch": ()},
        minimum=1,
        limit=64,
        why="(each bucket is a batch shape of its own, traced once per worker)",
    )
    max_len: int | None = option(
        None,
        "Stroke-3 rows fed to the model (longer drawings are cropped).",
        tasks={"sketch": ()},
        minimum=1,
        limit=10000,
        why="(every drawing is padded to this many rows in every batch)",
    )
    # video
    frames: int | None = option(
        None,
        "Frames sampled per clip.",
        tasks=_VIDEO,
        minimum=1,
        limit=1024,
        why="(a batch of clips is held in memory as uint8 frames)",
    )
    frame_size: int | None = option(
        None,
        "Frames are resized to SIZE x SIZE.",
        tasks=_VIDEO,
        minimum=1,
        limit=1024,
        why="(a 1024 x 1024 RGB frame is 3 MB; clips are held in memory)",
    )
    sampling: str | None = option(
        None,
        "Uniformly spaced frames or a random contiguous run.",
        tasks={"video": ("folder", "ucf101")},
        choices=("uniform", "random"),
    )
    ucf101_config: str | None = option(None, "TFDS config.", tasks={"video": ("ucf101",)})
    # learning warm-ups: no run stops, nor runs at its peak rate, before it can learn
    lr_warmup: float = option(
        1.0,
        "Epochs of linear learning-rate warm-up from 0 before the schedule (at most a quarter of the run).",
        minimum=0,
        limit=MAX_EPOCHS,
        why=_EPOCHS_REASON,
    )
    patience_start: int = option(
        5,
        "Epochs before early stopping starts counting (a warm-up: models may sit at chance for a few epochs).",
        minimum=0,
        limit=MAX_EPOCHS,
        why=_EPOCHS_REASON,
    )
    # video: hard synthetic clips and clip augmentation
    difficulty: str | None = option(
        None,
        "Embedded clips: moving shapes (easy) or characters, action x facing, tested on unseen characters (hard).",
        tasks={"video": ("synthetic",)},
        choices=("easy", "hard"),
    )
    augment: bool | None = option(
        None,
        "Augment training clips: spatial shift, brightness/contrast and temporal jitter (mirrors only where "
        "the dataset declares how they relabel).",
        tasks=_VIDEO,
        off_switch="--no-augment",
        default_text="per dataset",
    )
    # forecast
    window: int | None = option(
        None,
        "Input days.",
        tasks=_FORECAST,
        minimum=7,
        reason="days (the naive baseline looks a week back)",
        limit=3660,
        why="days (ten years of input days is past any seasonality)",
    )
    horizon: int | None = option(None, "Days forecast.", tasks=_FORECAST, minimum=1, maximum=7, reason="days")
    series: str | None = option(
        None, "Which series.", tasks={"forecast": ("cta_ridership",)}, choices=("rail", "bus", "total")
    )
    date_column: str | None = option(None, "The date column.", tasks={"forecast": ("csv",)})
    value_column: str | None = option(None, "The value column.", tasks={"forecast": ("csv",)})
    fill_missing: str | None = option(
        None,
        "Missing days are an error (none) or interpolated.",
        tasks={"forecast": ("cta_ridership", "csv")},
        choices=("none", "interpolate"),
    )
    train_start: str | None = option(None, "First training day.", tasks=_FORECAST)
    train_end: str | None = option(None, "Last training day; validation starts the day after.", tasks=_FORECAST)
    valid_end: str | None = option(None, "Last validation day; test starts the day after.", tasks=_FORECAST)
    # forecast: known-future covariates
    covariates: str | None = option(
        None,
        "Known-future inputs: the day type (weekday / Saturday / Sunday or holiday) of past and forecast days, "
        "or none (the series alone).",
        tasks=_FORECAST,
        choices=("day_type", "none"),
    )
    day_type_column: str | None = option(
        None,
        "Column of day-type codes, one per day.",
        tasks={"forecast": ("csv",)},
        default_text="the calendar's weekday/Saturday/Sunday plus --holidays",
    )
    holidays: str | None = option(
        None,
        "File of holidays, one ISO date (YYYY-MM-DD) a line: they take the Sunday day type.",
        tasks={"forecast": ("csv",)},
        default_text="none",
    )
    # forecast: an averaged ensemble
    ensemble: int | None = option(
        None,
        "Members of an averaged ensemble: N networks of the same architecture, each with its own weights and "
        "its own loss, trained side by side on the same batches; the served model averages their forecasts.",
        tasks=_FORECAST,
        minimum=1,
        limit=MAX_ENSEMBLE,
        why="(each member adds its own network and Adam state to every training step and to the served "
        "model: 5 members already cost ~3x one network's training time)",
    )
    # forecast: one network distilled from the ensemble (issue #31)
    distil: bool | None = option(
        None,
        "Train one more network beside the ensemble's members on their averaged forecast and the true targets "
        "(online distillation); it is the served model (model.onnx), the ensemble is kept as model.ensemble.onnx.",
        tasks=_FORECAST,
        off_switch="--no-distil",
    )
    # forecast: quantile outputs (issue #32)
    quantiles: tuple[float, ...] | None = option(
        None,
        "Forecast these quantile levels of every horizon day (increasing, in (0, 1), with the median 0.5), "
        "trained with the pinball loss; the served model returns them as 'quantiles' [batch, horizon, Q] beside "
        "the median 'forecast'. none: a point forecast.",
        tasks=_FORECAST,
        default_text="none",
    )
    conformal: bool | None = option(
        None,
        "With --quantiles: scale each horizon day's intervals around the median so that the widest central one "
        "covers its nominal share of the validation windows (split conformal); the scales go into the served "
        "model. The validation scores are then in-sample for the scales (metrics.json: calibration; the "
        "*_crossfit coverage is out of sample).",
        tasks=_FORECAST,
        off_switch="--no-conformal",
        default_text="on with --quantiles",
    )
    # cluster scale: elastic worker groups, shared storage, experiment tracking
    min_workers: int | None = option(
        None,
        "Elastic training: the fewest workers to go on with (also --workers MIN-MAX); the group "
        "restarts at the size the cluster has room for, from the last checkpoint, with the same global batch.",
        minimum=1,
        limit=MAX_WORKERS,
        why=_WORKERS_REASON,
        default_text="--workers (a fixed group)",
    )
    shared_storage: bool = option(
        False,
        "--storage-path is a directory every node mounts, though its filesystem type does not say "
        "so (checked: every node must see a file written there).",
    )
    mlflow_tracking_uri: str | None = option(
        None,
        "Log params, per-epoch metrics, scores and the run dir's files to MLflow (http://..., "
        "sqlite:///FILE, databricks); needs the mlflow extra.",
        default_text="no tracking",
    )
    mlflow_experiment: str | None = option(
        None, "MLflow experiment (created if missing).", default_text="rnnforge-TASK"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", parse_categories(self.categories))
        object.__setattr__(self, "quantiles", parse_quantiles(self.quantiles))
        for name, declared in declarations().items():
            if not declared.applies_to(self.task, self.dataset):
                object.__setattr__(self, name, None)  # what does not apply to the task or dataset stays unset
            elif getattr(self, name) is not None:
                declared.check(name, getattr(self, name))
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Refuse options that each apply but contradict one another."""
        if self.min_workers is not None and self.min_workers > self.workers:
            raise UserError(
                f"--min-workers {self.min_workers} is more than --workers {self.workers}: "
                "an elastic group runs between MIN and --workers workers"
            )
        if self.mixed_precision and not self.gpus_per_worker:
            raise UserError(
                "--mixed-precision needs GPU workers (--gpus-per-worker > 0): "
                "on CPUs float16 is slower than float32, not faster"
            )
        if self.holidays and self.day_type_column:
            raise UserError(
                "--holidays and --day-type-column both give the day types: --day-type-column reads them from the "
                "CSV, --holidays marks holidays in the calendar's; give one of them"
            )
        if self.covariates == "none" and (self.day_type_column or self.holidays):
            given = "--day-type-column" if self.day_type_column else "--holidays"
            raise UserError(f"{given} gives day types, which --covariates none leaves out: drop one of them")
        if self.conformal and not self.quantiles:
            raise UserError("--conformal scales the intervals of --quantiles: give --quantiles too (e.g. 0.1,0.5,0.9)")
        if (
            self.conformal
            and self.quantiles
            and not any(round(1 - v, 6) in self.quantiles for v in self.quantiles if v < 0.5)
        ):
            raise UserError(
                f"--conformal needs a central interval among --quantiles (a level below 0.5 and its mirror 1 - level), "
                f"got {','.join(f'{v:g}' for v in self.quantiles)}"
            )
        if self.date_column is not None and self.date_column == self.value_column:
            raise UserError(f"--value-column {self.value_column!r} is the --date-column too: name the column of values")

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``task`` and every option that applies to it and its dataset (config.json's fields)."""
        declared = declarations()
        names = ["task", *(name for name, option in declared.items() if option.applies_to(self.task, self.dataset))]
        return {name: _plain(getattr(self, name)) for name in names}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config ``to_dict`` gave, or a run dir's config.json (its ``info``,
        ``num_examples`` and ``versions`` are no options and are left out)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _plain(value: Any) -> Any:
    """JSON's form of a field's value: a tuple (``categories``) becomes a list."""
    return list(value) if isinstance(value, tuple) else value


@cache
def declarations() -> Mapping[str, Option]:
    """Field name -> ``Option``, in declaration order (every field but ``task``)."""
    return types.MappingProxyType(
        {f.name: f.metadata["option"] for f in dataclasses.fields(TrainConfig) if "option" in f.metadata}
    )


def declared_defaults() -> dict[str, Any]:
    """Field name -> its default for every task (before a task spec's ``defaults``)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if "option" in f.metadata}


@cache
def value_type(name: str) -> type:
    """The type of an option's values: ``int``, ``float``, ``str``, ``bool`` or ``tuple``."""
    hint = typing.get_type_hints(TrainConfig)[name]
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint
