"""Every ``rnnforge train`` option, declared once: the fields of the frozen ``TrainConfig``.

A field is one option: its Python type, its default for every task (a task's ``spec.defaults``
in ``models/<task>.py`` overrides it for that task), and, in its ``Option`` metadata, the help
text, the range or the choices, and the tasks (and datasets) it applies to. Everything else is
generated from these declarations: ``rnnforge train``'s click options and its ``--help``
defaults per task (``rnnforge.cli``), the merge of defaults and the refusal of options that do
not apply (``rnnforge.models.resolve.resolve_config``), and the range and choice checks, which
run whenever a ``TrainConfig`` is made. A field that does not apply to the config's task is
``None``, and never written to config.json::

    config = resolve_config("forecast", {"epochs": 3})
    config.epochs, config.window, config.max_len        # 3, 56, None
    config.to_dict()                                     # config.json's fields; from_dict reverses it
"""

from __future__ import annotations

import dataclasses
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
    choices: tuple[str, ...] = ()
    off_switch: str = ""  # a boolean option's "off" form, e.g. "--in-memory" for --streaming
    default_text: str = ""  # --help's default where the value is None, e.g. "RUN_DIR/checkpoints"
    cli: bool = True  # False: set by code and tests, not an option of rnnforge train

    def applies_to(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def where(self) -> str:
        """The tasks and datasets it concerns, as --help starts its text: ``sketch quickdraw, video ucf101``."""
        if self.tasks is None:
            return ""
        return ", ".join(" ".join((task, *datasets)) for task, datasets in self.tasks.items())

    def range_text(self) -> str:
        """``at least 1``, ``positive``, ``in [0, 1)``, ``between 1 and 7``; empty without bounds."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            if self.open_minimum or self.open_maximum:
                return f"in {'(' if self.open_minimum else '['}{lo:g}, {hi:g}{')' if self.open_maximum else ']'}"
            return f"between {lo:g} and {hi:g}"
        if lo is not None:
            return ("positive" if lo == 0 else f"greater than {lo:g}") if self.open_minimum else f"at least {lo:g}"
        if hi is not None:
            return f"below {hi:g}" if self.open_maximum else f"at most {hi:g}"
        return ""

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
        if not self.in_range(value):
            reason = f" {self.reason}" if self.reason else ""
            raise UserError(f"{flag} must be {self.range_text()}{reason}, got {value}")


def option(default: Any, help: str, **declaration: Any) -> Any:
    """A ``TrainConfig`` field: ``default`` for every task, and its ``Option`` declaration."""
    return field(default=default, metadata={"option": Option(help, **declaration)})


_SKETCH_QUICKDRAW = {"sketch": ("quickdraw",)}
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
        None, "Files of a real dataset (a folder or, for forecast csv/cta_ridership, the CSV)."
    )
    workers: int = option(2, "Ray Train workers; MIN-MAX: an elastic group (--min-workers).", minimum=1)
    cpus_per_worker: int = option(1, "CPUs reserved for each worker.", minimum=1)
    gpus_per_worker: float = option(0, "GPUs per worker; > 0 trains on GPUs.", minimum=0)
    mixed_precision: bool = option(False, "GPU workers: compute in float16, keep float32 weights (mixed_float16).")
    allow_cpu_fallback: bool = option(
        False, "GPU workers whose TensorFlow sees no GPU train on the CPU (and say so) instead of stopping the run."
    )
    epochs: int = option(20, "Maximum epochs (early stopping may end sooner).", minimum=1)
    batch_size: int = option(64, "Per-worker batch size; the global batch is this x workers.", minimum=1)
    learning_rate: float = option(2e-3, "Peak learning rate of Adam.", minimum=0, open_minimum=True)
    lr_schedule: str = option("cosine", "Learning-rate schedule.", choices=("constant", "cosine", "exponential"))
    clipnorm: float = option(1.0, "Clip gradients to this global norm (0 = off).", minimum=0)
    dropout: float = option(
        0.0,
        "Dropout on the recurrent layers' inputs (never recurrent_dropout).",
        minimum=0,
        maximum=1,
        open_maximum=True,
    )
    rnn: str = option("lstm", "Recurrent cell (GRU uses reset_after=True).", choices=("lstm", "gru"))
    units: int | None = option(None, "Units of each recurrent layer.", minimum=1)
    patience: int = option(5, "Early-stopping patience on val_loss, in epochs (0 = off).", minimum=0)
    max_failures: int = option(0, "Worker-group restarts from the last checkpoint.", minimum=0)
    storage_path: str | None = option(
        None,
        "Checkpoints and Ray results: a directory every node shares, or s3://, gs:// URI.",
        default_text="RUN_DIR/checkpoints",
    )
    checkpoint_every: int = option(1, "Epochs between checkpoints (the end always gets one).", minimum=1)
    seed: int = option(42, "Random seed for weights and shuffling.")
    data_seed: int = option(0, "Seed of the embedded synthetic datasets.", cli=False)
    # sketch
    categories: tuple[str, ...] | None = option(
        None,
        "Comma-separated categories to use.",
        tasks={**_SKETCH_QUICKDRAW, "video": ("ucf101",)},
        default_text="all",
    )
    max_per_class: int | None = option(
        None, "Cap training drawings per category.", tasks=_SKETCH_QUICKDRAW, minimum=1, default_text="no cap"
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
    )
    max_len: int | None = option(
        None, "Stroke-3 rows fed to the model (longer drawings are cropped).", tasks={"sketch": ()}, minimum=1
    )
    # video
    frames: int | None = option(None, "Frames sampled per clip.", tasks=_VIDEO, minimum=1)
    frame_size: int | None = option(None, "Frames are resized to SIZE x SIZE.", tasks=_VIDEO, minimum=1)
    sampling: str | None = option(
        None, "Uniformly spaced frames or a random contiguous run.", tasks=_VIDEO, choices=("uniform", "random")
    )
    ucf101_config: str | None = option(None, "TFDS config.", tasks={"video": ("ucf101",)})
    # learning warm-ups (issue 22): no run stops, nor runs at its peak rate, before it can learn
    lr_warmup: float = option(
        1.0,
        "Epochs of linear learning-rate warm-up from 0 before the schedule (at most a quarter of the run).",
        minimum=0,
    )
    patience_start: int = option(
        5,
        "Epochs before early stopping starts counting (a warm-up: models may sit at chance for a few epochs).",
        minimum=0,
    )
    # video: hard synthetic clips and clip augmentation (issue 22)
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
        None, "Input days.", tasks=_FORECAST, minimum=7, reason="days (the naive baseline looks a week back)"
    )
    horizon: int | None = option(None, "Days forecast.", tasks=_FORECAST, minimum=1, maximum=7, reason="days")
    series: str | None = option(
        None, "Which series.", tasks={"forecast": ("cta_ridership",)}, choices=("rail", "bus", "total")
    )
    date_column: str | None = option(None, "The date column.", tasks={"forecast": ("csv",)})
    value_column: str | None = option(None, "The value column.", tasks={"forecast": ("csv",)})
    fill_missing: str | None = option(
        None, "Missing days are an error (none) or interpolated.", tasks=_FORECAST, choices=("none", "interpolate")
    )
    train_start: str | None = option(None, "First training day.", tasks=_FORECAST)
    train_end: str | None = option(None, "Last training day; validation starts the day after.", tasks=_FORECAST)
    valid_end: str | None = option(None, "Last validation day; test starts the day after.", tasks=_FORECAST)
    # forecast: known-future covariates (issue #18)
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
    # forecast: an averaged ensemble (issue #18)
    ensemble: int | None = option(
        None,
        "Members of an averaged ensemble: N networks of the same architecture, each with its own weights and "
        "its own loss, trained side by side on the same batches; the served model averages their forecasts.",
        tasks=_FORECAST,
        minimum=1,
    )
    # forecast: one network distilled from the ensemble (issue #31)
    distil: bool | None = option(
        None,
        "Train one more network beside the ensemble's members on their averaged forecast and the true targets "
        "(online distillation); it is the served model (model.onnx), the ensemble is kept as model.ensemble.onnx.",
        tasks=_FORECAST,
        off_switch="--no-distil",
    )
    # cluster scale (issue 19): elastic worker groups, shared storage, experiment tracking
    min_workers: int | None = option(
        None,
        "Elastic training: the fewest workers to go on with (also --workers MIN-MAX); the group "
        "restarts at the size the cluster has room for, from the last checkpoint, with the same global batch.",
        minimum=1,
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
        for name, declared in declarations().items():
            if not declared.applies_to(self.task):
                object.__setattr__(self, name, None)  # what does not apply to the task stays unset
            elif getattr(self, name) is not None:
                declared.check(name, getattr(self, name))
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

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``task`` and every option that applies to it (config.json's fields)."""
        declared = declarations()
        names = ["task", *(name for name, option in declared.items() if option.applies_to(self.task))]
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
