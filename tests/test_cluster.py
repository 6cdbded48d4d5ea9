"""A local run whose driver died, rerun (``--verbose``: it also shows the machinery the default
console keeps out), and the storage and cluster-option refusals. ``ray job submit``, a worker
killed with SIGKILL and a node lost mid-training run on a real two-node cluster
(tests/test_cluster_nodes.py)."""

from __future__ import annotations

import json
import signal

import psutil
import pytest
from conftest import NO_GPU, NOISE, error_line, noise, run_cli, run_cli_process
from ray_cluster import (
    output_of,
    process_tree,
    registered_epoch,
    start_cli,
    stop,
    wait_for,
)

#: A tiny sketch run: a few seconds per epoch on 2 cores, well above chance after 4 epochs.
TINY = ("sketch", "--epochs", "4", "--units", "16", "--max-len", "40", "--workers", "2", "--patience", "0")


def _is_ray_agent(proc: psutil.Process) -> bool:
    """Ray's dashboard and runtime-env agents, which notice a dead driver only after 10 s or more."""
    try:
        return proc.name().startswith("ray::") and proc.name().endswith("Agent")
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.ray
def test_verbose_rerun_after_the_driver_died_resumes_and_shows_the_machinery(tmp_path):
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

    second = run_cli_process(*args, "--verbose", timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "resuming the interrupted run" in output and f"resumed from checkpoint after epoch {done}" in output
    assert "epoch 1/4" not in output  # no epoch is trained twice
    # --verbose shows the machinery (the demo's console shows none of it: tests/test_console.py) ...
    expected = [n for n in NOISE if NO_GPU or n not in ("E0000", "cuInit")]
    assert set(noise(output)) >= set(expected), (set(expected) - set(noise(output)), output[-3000:])
    assert "epoch 4/4  loss" in second.stdout
    # ... and a local instance runs no preemption watcher (its actor's start-up warning would show)
    assert "PreemptionWatcher" not in output, output[-3000:]
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
