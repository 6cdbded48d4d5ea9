"""Cluster scale without a cluster (issue 19): the elastic group's batch rule and resize record,
``--workers MIN-MAX``, the runtime envs that merge with a job's, Ray's CPU count, the workers'
``TF_CONFIG`` (set without TensorFlow in Ray Train's controller), and MLflow
tracking against a real local store (sqlite). tests/test_cluster_nodes.py runs them on two Ray nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from rnnforge.cli import parse_train_args
from rnnforge.cluster.fit import group_batch
from rnnforge.cluster.launch import job_runtime_env, without_job_keys, worker_env
from rnnforge.cluster.progress import report_lines
from rnnforge.cluster.storage import check_storage
from rnnforge.core import tracking
from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.core.machine import local_cpus


def test_workers_min_max_is_an_elastic_group():
    config = parse_train_args(["sketch", "--workers", "1-4"])
    assert (config.min_workers, config.workers) == (1, 4)
    assert config.to_dict()["min_workers"] == 1
    assert parse_train_args(["sketch", "--workers", "3"]).min_workers is None
    assert parse_train_args(["sketch", "--workers", "4", "--min-workers", "2"]).min_workers == 2


@pytest.mark.parametrize(
    "workers, size, expected",
    [
        (2, 2, 128),  # a fixed group: --batch-size x --workers
        (2, 1, 128),  # half the group left: the same global batch, twice the per-worker batch
        (4, 3, 255),  # 256 among 3: 85 each, rounded down to whole per-worker batches
        (4, 4, 256),
    ],
)
def test_an_elastic_group_keeps_the_global_batch(workers, size, expected):
    config = TrainConfig(task="sketch", workers=workers, min_workers=1, batch_size=64)
    assert group_batch(config, size) == expected
    assert group_batch(config, size) % size == 0


def test_the_workers_variables_leave_the_jobs_own_alone(monkeypatch):
    """Inside `ray job submit --runtime-env-json`, a key the job sets is the job's: rnnforge leaves
    it out, so Ray's merge meets no conflict (ray-project/ray#39208)."""
    job = {"env_vars": {"OMP_NUM_THREADS": "4"}, "working_dir": "gcs://x.zip", "worker_process_setup_hook": "m.f"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": job, "metadata": {}}))
    assert job_runtime_env() == job
    ours = {"env_vars": worker_env(TrainConfig(task="sketch", cpus_per_worker=2)), "worker_process_setup_hook": "h"}
    merged = without_job_keys(ours, job_runtime_env())
    assert "OMP_NUM_THREADS" not in merged["env_vars"] and merged["env_vars"]["TF_NUM_INTRAOP_THREADS"] == "2"
    assert "worker_process_setup_hook" not in merged
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    assert job_runtime_env() == {} and without_job_keys(ours, {}) == ours


def test_local_cpus_counts_as_ray_does():
    from ray._private.utils import get_num_cpus

    assert local_cpus() == get_num_cpus() >= 1


def test_declared_shared_storage_skips_the_filesystem_type_rule(tmp_path):
    with pytest.raises(UserError, match="--shared-storage"):
        check_storage(str(tmp_path), nodes=2)
    check_storage(str(tmp_path), nodes=2, declared_shared=True)  # cluster.storage checks every node instead


def test_a_resized_restart_says_so_on_the_console():
    report = {"epoch": 3, "restarts": 1, "resumed_after": 2, "world_size": 1, "resized_from": 2}
    assert (
        report_lines(report, 4, "accuracy", 0)[0] == "resumed from checkpoint after epoch 2 (restart 1; 2 -> 1 workers)"
    )
    plain = {**report, "world_size": 2, "resized_from": None}
    assert report_lines(plain, 4, "accuracy", 0)[0] == "resumed from checkpoint after epoch 2 (restart 1)"


def test_a_restart_at_another_size_is_recorded(tmp_path):
    """A checkpoint of a 2-worker group, resumed by 1 worker: ``state["resizes"]`` says when and how."""
    import tensorflow as tf
    from ray.train import Checkpoint
    from tensorflow import keras

    from rnnforge.cluster.worker import CHECKPOINT_STATE, CHECKPOINT_TF, WorkerTraining

    def model():
        m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        m.compile(optimizer="adam", loss="mse")
        return m

    config = TrainConfig(task="sketch", workers=2, min_workers=1)
    before = WorkerTraining(config, model(), 0, 2, 128, "accuracy")
    before.state.update(epoch=2, history=[{"epoch": 1}, {"epoch": 2}])
    before.tf_state.write(str(tmp_path / CHECKPOINT_TF / "ckpt"))
    (tmp_path / CHECKPOINT_STATE).write_text(json.dumps(before.state))
    after = WorkerTraining(config, model(), 0, 1, 128, "accuracy")
    after.resume(Checkpoint.from_directory(str(tmp_path)))
    (resize,) = after.state["resizes"]
    assert (resize["epoch"], resize["from"], resize["to"]) == (2, 2, 1) and resize["time"].endswith("+00:00")
    assert after.state["world_size"] == 1 and after.state["restarts"] == 1
    assert after.reported({"epoch": 3})["resized_from"] == 2
    assert tf.reduce_all(after.model.weights[0] == before.model.weights[0])


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _run_dir(path: Path) -> Path:
    path.mkdir()
    for name in ("model.keras", "config.json", "metrics.json", "architecture.txt", "training_curve.png"):
        (path / name).write_text(name)
    (path / "tensorboard" / "train").mkdir(parents=True)
    (path / "tensorboard" / "train" / "events").write_text("e")
    return path


def test_mlflow_tracking_in_a_real_local_store(tmp_path, store):
    from mlflow import MlflowClient

    config = TrainConfig(task="forecast", epochs=3, mlflow_tracking_uri=store, mlflow_experiment="unit")
    run_dir = _run_dir(tmp_path / "run")
    tracking.check_tracking(config)
    opened = tracking.open_run(config, run_dir)
    assert json.loads((run_dir / "mlflow.json").read_text()) == opened
    assert tracking.open_run(config, run_dir) == opened  # a resumed run logs into the same MLflow run
    for epoch in (1, 2, 3):
        tracking.log_epoch(opened, {"epoch": epoch, "loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "seconds": 1.5})
    resizes = [{"time": "t", "epoch": 2, "from": 2, "to": 1}]
    tracking.close_run(
        opened,
        run_dir,
        {"valid": {"examples": 9, "mae": 0.5}, "test": {"mae": 0.25}, "train_seconds": 7, "resizes": resizes},
    )

    client = MlflowClient(store)
    run = client.get_run(opened["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(opened["experiment_id"]).name == "unit"
    assert run.data.params["epochs"] == "3" and run.data.params["task"] == "forecast"
    assert [(m.step, m.value) for m in client.get_metric_history(opened["run_id"], "val_loss")] == [
        (1, 2.0),
        (2, 1.0),
        (3, pytest.approx(2 / 3)),
    ]
    assert run.data.metrics["test_mae"] == 0.25 and "valid_examples" not in run.data.metrics
    assert [(m.step, m.value) for m in client.get_metric_history(opened["run_id"], "workers")] == [(2, 1.0)]
    assert {f.path for f in client.list_artifacts(opened["run_id"])} == {
        "model.keras",
        "config.json",
        "metrics.json",
        "architecture.txt",
        "training_curve.png",
        "tensorboard",
    }
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "mlartifacts")

    # export onnx: into the run the record names, or the one --mlflow-run-id names
    (run_dir / "model.onnx").write_text("onnx")
    (run_dir / "parity.json").write_text("{}")
    target = tracking.export_target(run_dir)
    assert target == {"run_id": opened["run_id"], "tracking_uri": store}
    tracking.log_export(run_dir, target)
    assert {"model.onnx", "parity.json"} <= {f.path for f in client.list_artifacts(opened["run_id"])}
    with pytest.raises(UserError, match="--mlflow-run-id nosuchrun at sqlite"):
        tracking.export_target(run_dir, "nosuchrun")


def test_export_without_a_tracked_run_logs_nothing(tmp_path, store):
    assert tracking.export_target(_run_dir(tmp_path / "run")) is None
    with pytest.raises(UserError, match="MLFLOW_TRACKING_URI"):
        tracking.export_target(tmp_path / "run", "abc")


def _unpickled_imports_tensorflow(obj) -> bool:
    """Whether a fresh process that unpickles ``obj`` as Ray Train's controller does (classes by
    reference) ends up with TensorFlow imported."""
    import ray.cloudpickle

    code = "import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1])); print('tensorflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code, ray.cloudpickle.dumps(obj).hex()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


@pytest.mark.process
def test_ray_trains_controller_gets_its_backend_without_tensorflow():
    """Ray's own TensorflowConfig imports TensorFlow wherever it is unpickled (the controller,
    every run and restart); rnnforge's backend config does not."""
    from ray.train.tensorflow import TensorflowConfig

    from rnnforge.cluster.tf_backend import MultiWorkerConfig

    assert not _unpickled_imports_tensorflow(MultiWorkerConfig())
    assert _unpickled_imports_tensorflow(TensorflowConfig())  # what it replaces


def test_each_worker_gets_the_cluster_spec_multi_worker_mirrored_strategy_reads(monkeypatch):
    import tensorflow as tf

    from rnnforge.cluster.tf_backend import MultiWorkerConfig, _set_tf_config

    monkeypatch.delenv("TF_CONFIG", raising=False)
    _set_tf_config(["127.0.0.1:7001", "127.0.0.1:7002"], 1)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert resolver.cluster_spec().as_dict() == {"worker": ["127.0.0.1:7001", "127.0.0.1:7002"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert MultiWorkerConfig().framework.value == "tensorflow"  # Ray's dashboard shows a TensorFlow run
