"""Experiment tracking in MLflow: ``rnnforge train TASK --mlflow-tracking-uri URI``.

The driver opens one MLflow run per run dir (``open_run``) and logs the ``TrainConfig`` as its
params; rank 0 logs each epoch's metrics (``log_epoch``, step = epoch); when the run dir is
written the driver logs the final scores, the resizes of an elastic run and the run dir's files
as artifacts (``close_run``). ``rnnforge export onnx`` adds the ONNX files to the same MLflow run
(``export_target``, ``log_export``). RUN_DIR/mlflow.json records the tracking URI and the MLflow run id: a resumed
run (same ``--run-dir``) goes on logging into the same MLflow run, and ``export onnx`` finds it
there (or takes ``--mlflow-run-id``).

Any MLflow store works: a tracking server (``http://host:5000``, credentials from MLflow's own
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_TOKEN``), ``databricks``, or a local database
(``sqlite:///path/mlflow.db``, whose artifacts rnnforge puts in ``path/mlartifacts``). MLflow is
the optional extra ``pip install "rnnforge[mlflow]"``; nothing here imports it unless tracking is on.

    tracking = open_run(config, run_dir)            # None when --mlflow-tracking-uri is not given
    log_epoch(tracking, {"epoch": 1, "loss": 0.7})  # rank 0, each epoch
    close_run(tracking, run_dir, metrics)           # the driver, once the run dir is written
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from rnnforge.core import fileio
from rnnforge.core.config import TrainConfig
from rnnforge.core.console import verbose
from rnnforge.core.errors import UserError, first_line
from rnnforge.core.run_files import read_mlflow
from rnnforge.core.uris import redacted

RECORD = "mlflow.json"
#: An unreachable tracking server fails within about a minute, not after MLflow's default retries.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
#: Run dir files logged as artifacts after training (the folders whole), and after export.
TRAIN_ARTIFACTS = ("model.keras", "config.json", "metrics.json", "architecture.txt", "*.png", "tensorboard")
EXPORT_ARTIFACTS = ("*.onnx", "*parity.json")


def record_path(run_dir: Path) -> Path:
    """RUN_DIR/mlflow.json: the tracking URI, experiment and MLflow run id of the run dir."""
    return Path(run_dir) / RECORD


def _client(tracking_uri: str):
    """An ``MlflowClient`` for ``tracking_uri``, with MLflow's INFO lines out of the console."""
    for key, value in HTTP_ENV.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError(
            f"--mlflow-tracking-uri {redacted(tracking_uri)}: MLflow is not installed; pip install 'rnnforge[mlflow]'"
        ) from None
    if not verbose():
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri)


def _refusal(what: str, exc: Exception) -> UserError:
    return UserError(redacted(f"{what}: {first_line(exc)}"))


def open_run(config: TrainConfig, run_dir: Path) -> dict | None:
    """The MLflow run of ``run_dir`` (``{"tracking_uri", "experiment_id", "run_id"}``), created
    with the config as params, or the one RUN_DIR/mlflow.json names when an interrupted run
    resumes; ``None`` without ``--mlflow-tracking-uri``. Refuses a store it cannot reach."""
    uri = config.mlflow_tracking_uri
    if not uri:
        return None
    client = _client(uri)
    record = record_path(run_dir)
    try:
        previous = read_mlflow(record) if record.is_file() else {}
        if previous.get("tracking_uri") == uri and client.get_run(previous["run_id"]):
            return previous
        name = config.mlflow_experiment or f"rnnforge-{config.task}"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name, _artifacts(uri))
        run = client.create_run(experiment_id, run_name=Path(run_dir).name, tags={"rnnforge.task": config.task})
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in config.to_dict().items()]
        client.log_batch(run.info.run_id, params=params)
    except UserError:
        raise
    except Exception as exc:  # MlflowException, connection errors, a store URI MLflow does not know
        raise _refusal(f"--mlflow-tracking-uri {uri}", exc) from None
    tracking = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run.info.run_id}
    fileio.write_json(record, tracking)
    return tracking


def _artifacts(uri: str) -> str | None:
    """Where a new experiment of a local ``sqlite:///`` store keeps artifacts: ``mlartifacts``
    beside the database (MLflow's default, ``./mlruns``, depends on the working directory)."""
    database = _sqlite_file(uri)
    return (database.resolve().parent / "mlartifacts").as_uri() if database else None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///PATH`` store; ``None`` for other stores."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def log_epoch(tracking: dict | None, entry: dict) -> None:
    """Rank 0: one epoch's numbers (``WorkerTraining``'s history entry) at step = epoch. A store
    that fails mid-run costs a warning in the worker's log, never the training run."""
    if not tracking:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(entry["epoch"])
    metrics = [Metric(k, float(v), now, step) for k, v in entry.items() if k != "epoch" and isinstance(v, (int, float))]
    try:
        _client(tracking["tracking_uri"]).log_batch(tracking["run_id"], metrics=metrics)
    except Exception as exc:
        print(
            redacted(f"warning: MLflow logging of epoch {step} failed: {first_line(exc)}"), file=sys.stderr, flush=True
        )


def close_run(tracking: dict | None, run_dir: Path, metrics: dict) -> None:
    """The driver, once the run dir is written: the final scores (``test_accuracy``, ...), the
    worker-group size after each resize, the run dir's files; the MLflow run ends FINISHED."""
    if not tracking:
        return
    from mlflow.entities import Metric

    client, run_id = _client(tracking["tracking_uri"]), tracking["run_id"]
    now = int(time.time() * 1000)
    final = [
        Metric(f"{split}_{key}", float(value), now, 0)
        for split in ("valid", "test")
        for key, value in metrics.get(split, {}).items()
        if isinstance(value, (int, float)) and key != "examples"
    ]
    final += [Metric("workers", float(r["to"]), now, int(r["epoch"])) for r in metrics.get("resizes", [])]
    final += [Metric("train_seconds", float(metrics["train_seconds"]), now, 0)]
    try:
        client.log_batch(run_id, metrics=final)
        _log_files(client, run_id, Path(run_dir), TRAIN_ARTIFACTS)
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        raise _refusal(f"MLflow run {run_id} at {tracking['tracking_uri']} (the run dir is written)", exc) from None
    print(f"mlflow: run {run_id} at {redacted(tracking['tracking_uri'])}", flush=True)


def fail_run(tracking: dict | None) -> None:
    """Mark the MLflow run FAILED (training failed); a failing store is not reported over that."""
    if tracking:
        with contextlib.suppress(Exception):  # the training failure is what the user must read
            _client(tracking["tracking_uri"]).set_terminated(tracking["run_id"], "FAILED")


def export_target(run_dir: Path, run_id: str | None = None) -> dict | None:
    """Before ``export onnx`` works: the MLflow run its files go to, ``{"tracking_uri", "run_id"}``.
    ``run_id`` (``--mlflow-run-id``) must exist in the tracking URI of RUN_DIR/mlflow.json, else of
    MLflow's own ``MLFLOW_TRACKING_URI``; without it, the run the record names, if any (a store
    that fails then costs a warning, not the export). ``None``: nothing to log to."""
    record = record_path(run_dir)
    saved = read_mlflow(record) if record.is_file() else {}
    if not run_id and not saved.get("run_id"):
        return None
    target = {
        "run_id": run_id or saved["run_id"],
        "tracking_uri": saved.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI"),
    }
    if not target["tracking_uri"]:
        raise UserError(
            f"--mlflow-run-id {run_id}: no tracking URI; {record} does not name one, so set MLFLOW_TRACKING_URI"
        )
    database = _sqlite_file(target["tracking_uri"])
    try:
        if database and not database.is_file():  # MLflow would create an empty store there
            raise FileNotFoundError(f"no MLflow database at {database}")
        _client(target["tracking_uri"]).get_run(target["run_id"])
    except Exception as exc:
        refusal = _refusal(f"--mlflow-run-id {target['run_id']} at {target['tracking_uri']}", exc)
        if run_id:
            raise refusal from None
        print(f"warning: the ONNX files will not be logged to MLflow ({refusal})", file=sys.stderr, flush=True)
        return None
    return target


def log_export(run_dir: Path, target: dict | None) -> None:
    """``export onnx``, once its files are written: log the ONNX files and parity records into
    ``target`` (``export_target``'s); a failure is a warning, since the export succeeded."""
    if not target:
        return
    try:
        _log_files(_client(target["tracking_uri"]), target["run_id"], Path(run_dir), EXPORT_ARTIFACTS)
    except Exception as exc:
        print(
            redacted(f"warning: the ONNX files are written but not logged to MLflow: {first_line(exc)}"),
            file=sys.stderr,
        )
        return
    print(f"mlflow: ONNX files logged to run {target['run_id']} at {redacted(target['tracking_uri'])}", flush=True)


def check_tracking(config: TrainConfig) -> None:
    """Before any work: ``--mlflow-tracking-uri`` names a store MLflow knows and can reach."""
    if config.mlflow_tracking_uri:
        try:
            _client(config.mlflow_tracking_uri).search_experiments(max_results=1)
        except UserError:
            raise
        except Exception as exc:
            raise _refusal(f"--mlflow-tracking-uri {config.mlflow_tracking_uri}", exc) from None


def _log_files(client, run_id: str, run_dir: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in sorted(run_dir.glob(pattern)):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            else:
                client.log_artifact(run_id, str(path))
