"""From ``rnnforge train TASK --OPTION VALUE ...`` to a checked ``TrainConfig``.

An option's value is the user's, else the task spec's ``defaults`` (``models/<task>.py``), else
its declaration's default (``rnnforge.core.config``). ``resolve_config`` refuses an option that
does not apply to the task or its dataset, an empty value, an unknown dataset and a
``--storage-path`` no worker could use; ``TrainConfig`` itself checks ranges, choices and
options that contradict one another. ``task_defaults`` is what ``--help`` shows.

    resolve_config("sketch", {"epochs": 3, "units": None})   # None: not given
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnforge.core.config import TrainConfig, declarations, declared_defaults
from rnnforge.core.errors import UserError
from rnnforge.core.uris import refuse_credentials
from rnnforge.models import TASKS, get_spec

#: ``--storage-path`` URI schemes (pyarrow filesystems, as Ray Train uses them).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")
#: Options holding local paths: made absolute here, since workers may run in another directory.
PATH_OPTIONS = ("data_dir", "tfds_dir", "holidays")


def task_defaults(task: str, demo: bool = False) -> dict[str, Any]:
    """Every option that applies to ``task`` -> its default there (``demo``: as ``rnnforge demo`` trains)."""
    spec = get_spec(task)
    declared = declarations()
    defaults = {name: value for name, value in declared_defaults().items() if declared[name].applies_to(task)}
    return {**defaults, "dataset": spec.default_dataset, **spec.defaults, **(spec.demo_options if demo else {})}


def defaults_per_task(name: str, demo: bool = False) -> dict[str, Any]:
    """Option ``name``'s default in each task it applies to: ``{"sketch": 15, "forecast": 80, ...}``."""
    option = declarations()[name]
    return {task: task_defaults(task, demo)[name] for task in TASKS if option.applies_to(task)}


def resolve_config(task: str, options: Mapping[str, Any]) -> TrainConfig:
    """The checked config of ``task`` with ``options`` (option name -> value; ``None``: not given)."""
    spec = get_spec(task)
    given = {name: value for name, value in options.items() if value is not None}
    declared = declarations()
    foreign = sorted(name for name in given if name not in declared or not declared[name].applies_to(task))
    if foreign:
        raise UserError(f"--{foreign[0].replace('_', '-')} does not apply to task {task!r}")
    blank = next((name for name, value in given.items() if isinstance(value, str) and not value.strip()), None)
    if blank:
        raise UserError(f"--{blank.replace('_', '-')} is empty: give a value, or leave the option out")
    values = {**task_defaults(task), **given}
    for name in PATH_OPTIONS:
        if values.get(name):
            values[name] = str(Path(values[name]).expanduser().resolve())
    if values["dataset"] not in spec.datasets:
        raise UserError(
            f"unknown dataset {values['dataset']!r} for task {task!r} (--dataset): "
            f"expected one of {', '.join(spec.datasets)}"
        )
    elsewhere = sorted(name for name in given if not declared[name].applies_to(task, values["dataset"]))
    if elsewhere:
        datasets = declared[elsewhere[0]].tasks[task]
        raise UserError(
            f"--{elsewhere[0].replace('_', '-')} does not apply to dataset {values['dataset']!r} of task {task!r}: "
            f"only to --dataset {' or '.join(datasets)}"
        )
    if task == "forecast" and values.get("distil") and (values.get("ensemble") or 1) < 2:
        if given.get("distil"):
            raise UserError(
                f"--distil trains one network from an ensemble's members: it needs --ensemble 2 or more, got {values.get('ensemble') or 1}"
            )
        values["distil"] = False  # the default distils the default ensemble; a single network has none
    values["storage_path"] = normalise_storage(values["storage_path"])
    if values.get("mlflow_tracking_uri"):
        refuse_credentials(
            "--mlflow-tracking-uri",
            values["mlflow_tracking_uri"],
            "give them to MLflow through MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN)",
        )
    return TrainConfig(task=task, **values)


def normalise_storage(storage: str | None) -> str | None:
    """``--storage-path``: an absolute local path, or a URI of a filesystem pyarrow reads."""
    if not storage:
        return None
    scheme = storage.split("://", 1)[0].lower() if "://" in storage else None
    if scheme is None:
        return str(Path(storage).expanduser().resolve())
    if scheme not in STORAGE_SCHEMES:
        raise UserError(
            f"--storage-path {storage}: unsupported scheme {scheme}://, expected a directory or one of "
            + ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
        )
    refuse_credentials(
        "--storage-path",
        storage,
        "give them to the cluster through the cloud SDK's environment or credentials file (e.g. "
        "AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS)",
    )
    return storage
