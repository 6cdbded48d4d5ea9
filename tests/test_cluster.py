"""Ray clusters as users have them: `ray job submit` to a real head node with token auth (the
suite's one uninterrupted Ray Train run, checked in full), a worker killed with SIGKILL
mid-training, a rerun after the driver died, and the storage/GPU refusals."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, error_line, run_cli, run_cli_process
from ray_cluster import (
    BIN,
    output_of,
    process_tree,
    registered_epoch,
    start_cli,
    stop,
    wait_for,
)

#: A tiny sketch run: a few seconds per epoch on 2 cores, well above chance after 4 epochs.
TINY = ("sketch", "--epochs", "4", "--units", "16", "--max-len", "40", "--workers", "2", "--patience", "0")


def _checkpoints(storage_run: Path) -> list[Path]:
    """Checkpoints Ray Train has fully written (their state.json exists)."""
    return sorted(c for c in storage_run.glob("checkpoint_*") if (c / "state.json").is_file())


def _train_workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The Ray Train worker processes that the rnnforge process ``proc`` started."""
    workers = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.NoSuchProcess:
            pass
    return workers


@pytest.fixture(scope="module")
def job_run(ray_head, tmp_path_factory):
    """An uninterrupted TINY run, submitted with `ray job submit` to the shared token-authenticated
    Ray head on 127.0.0.1 (conftest's ``ray_head``: own temp dir and ports)."""
    head, env = ray_head
    out = tmp_path_factory.mktemp("job")
    run_dir, storage = out / "tiny", out / "storage"
    submit = subprocess.run(
        [
            BIN / "ray",
            "job",
            "submit",
            "--address",
            head.dashboard,
            "--submission-id",
            "rnnforge-tiny",
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "rnnforge",
            "train",
            *TINY,
            "--address",
            "auto",
            "--run-dir",
            run_dir,
            "--storage-path",
            storage,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    status = subprocess.run(
        [BIN / "ray", "job", "status", "--address", head.dashboard, "rnnforge-tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return {"submit": submit, "status": status.stdout + status.stderr, "run_dir": run_dir, "storage": storage}


def _is_ray_agent(proc: psutil.Process) -> bool:
    """Ray's dashboard and runtime-env agents, which notice a dead driver only after 10 s or more."""
    try:
        return proc.name().startswith("ray::") and proc.name().endswith("Agent")
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_ray_job_submit_to_a_token_authenticated_cluster(job_run):
    """The suite's one uninterrupted 2-worker Ray Train run: submitted as a job, it writes a
    complete run dir."""
    submit = job_run["submit"]
    assert "succeeded" in job_run["status"].lower(), submit.stdout[-3000:] + submit.stderr[-3000:]
    output = submit.stdout + submit.stderr
    assert "epoch 1/4" in output and "epoch 4/4" in output and "samples/s" in output
    # the job's log holds the driver's clean lines: no worker prefixes, no TensorFlow start-up lines
    assert "epoch 1/4  loss" in output and "training done in" in output
    assert not [n for n in ("RayTrainWorker pid=", "I0000", "absl::InitializeLog", "cuInit") if n in output], output

    run_dir = job_run["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["epochs_run"] == 4 and metrics["restarts"] == 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["history"][1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["samples_per_s_per_worker"] * 2 == pytest.approx(metrics["samples_per_s"], rel=0.01)
    assert 0.3 < metrics["test"]["accuracy"] <= 1.0  # 10 classes: well above chance after 4 epochs

    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == "sketch" and config["workers"] == 2 and config["epochs"] == 4
    assert len(config["info"]["class_names"]) == 10 and config["info"]["delta_scale"] > 0

    from tensorflow import keras  # plain tf-keras loads the model, no custom objects

    model = keras.models.load_model(run_dir / "model.keras")
    assert model.output_shape == (None, 10)
    assert (run_dir / "training_curve.png").is_file() and (run_dir / "confusion_matrix.png").is_file()
    # --storage-path: checkpoints under STORAGE/<run dir name>, none in the run dir
    assert _checkpoints(job_run["storage"] / run_dir.name) and not (run_dir / "checkpoints").exists()
    checkpoints = [c for c in (job_run["storage"] / run_dir.name).glob("checkpoint_*") if c.is_dir()]
    assert all((c / "model.keras").is_file() and (c / "state.json").is_file() for c in checkpoints)
    for run in ("train", "validation"):  # TensorBoard scalars from rank 0
        assert _scalar_steps(run_dir / "tensorboard" / run, "epoch_loss") == [1, 2, 3, 4]
    assert _scalar_steps(run_dir / "tensorboard" / "train", "epoch_samples_per_s") == [1, 2, 3, 4]


def _scalar_steps(log_dir: Path, tag: str) -> list[int]:
    """The steps at which TensorBoard event files in ``log_dir`` hold scalar ``tag``."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    steps = []
    for path in log_dir.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [
                event.step
                for value in event.summary.value
                if value.tag == tag and value.metadata.plugin_data.plugin_name == "scalars"
            ]
    return sorted(steps)


@pytest.mark.slow
def test_a_sigkilled_worker_restarts_from_the_last_checkpoint(tmp_path, job_run):
    run_dir = tmp_path / "killed"
    proc = start_cli("train", *TINY, "--max-failures", "1", "--run-dir", run_dir)
    try:
        wait_for(
            lambda: registered_epoch(run_dir / "checkpoints" / "train") or proc.poll() is not None,
            300,
            "the first checkpoint",
        )
        workers = wait_for(lambda: _train_workers(proc), 10, "the Ray Train workers")
        assert proc.poll() is None, output_of(proc)[-3000:]
        victim = workers[-1]
        victim.send_signal(signal.SIGKILL)  # a real process death, not a Python exception
        victim.wait(10)
        proc.wait(timeout=600)
    finally:
        stop(process_tree(proc.pid))
    output = output_of(proc)
    assert proc.returncode == 0, output[-3000:]
    assert "resumed from checkpoint after epoch" in output and "epoch 4/4" in output

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["restarts"] == 1 and metrics["epochs_run"] == 4
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    uninterrupted = json.loads((job_run["run_dir"] / "metrics.json").read_text())
    assert abs(metrics["test"]["accuracy"] - uninterrupted["test"]["accuracy"]) < 0.1, (
        metrics["test"],
        uninterrupted["test"],
    )


@pytest.mark.slow
@pytest.mark.ray
def test_rerun_after_the_driver_died_resumes_the_run(tmp_path):
    run_dir = tmp_path / "resumed"
    args = ("train", *TINY, "--workers", "1", "--cpus-per-worker", "2", "--run-dir", run_dir)  # the last --workers wins
    first = start_cli(*args)
    try:
        wait_for(
            lambda: registered_epoch(run_dir / "checkpoints" / "train") or first.poll() is not None,
            300,
            "the first checkpoint",
        )
        assert first.poll() is None, output_of(first)[-3000:]
    finally:
        tree = process_tree(first.pid)
        followers = [p for p in tree if not _is_ray_agent(p)]
        first.send_signal(signal.SIGKILL)  # the driver dies; its local Ray's raylet and workers follow it
        psutil.wait_procs(followers, timeout=10)
        stop(tree, grace=2)  # Ray's agents take a while to notice: they are stopped, not waited for
    done = registered_epoch(run_dir / "checkpoints" / "train")
    assert not (run_dir / "metrics.json").exists()

    second = run_cli_process(*args, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "resuming the interrupted run" in output and f"resumed from checkpoint after epoch {done}" in output
    assert "epoch 1/4" not in output  # no epoch is trained twice
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["restarts"] == 1 and metrics["epochs_run"] == 4
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]


def test_storage_must_be_shared_on_a_multi_node_cluster(tmp_path):
    from rnnforge.cluster.storage import check_storage
    from rnnforge.core.errors import UserError

    check_storage(str(tmp_path), nodes=1)
    check_storage("s3://bucket/runs", nodes=4)
    with pytest.raises(UserError, match="cluster has 3 nodes.*shared filesystem.*s3://"):
        check_storage(str(tmp_path), nodes=3)


def test_cluster_options_are_checked_before_any_work(tmp_path):
    line = error_line(run_cli("train", "sketch", "--mixed-precision", "--run-dir", tmp_path / "r"))
    assert "--mixed-precision needs GPU workers" in line
    line = error_line(run_cli("train", "sketch", "--storage-path", "ftp://host/x", "--run-dir", tmp_path / "r"))
    assert "unsupported scheme ftp://" in line
    assert not (tmp_path / "r").exists()


def test_storage_uri_with_credentials_is_refused_without_echoing_them(tmp_path):
    result = run_cli(
        "train", "sketch", "--storage-path", "s3://AKIAEXAMPLE:s3cr3tKey@bucket/runs", "--run-dir", tmp_path / "r"
    )
    line = error_line(result)
    assert "the URI holds credentials" in line and "AWS_ACCESS_KEY_ID" in line
    assert "s3cr3tKey" not in result.stdout + result.stderr and "AKIAEXAMPLE" not in result.stdout + result.stderr
    assert not (tmp_path / "r").exists()
