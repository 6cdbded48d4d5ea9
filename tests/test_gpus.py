"""Multi-GPU plumbing without a GPU: a Ray head that declares 2 logical GPUs assigns them to the
workers through ``CUDA_VISIBLE_DEVICES`` exactly as a GPU node does, while this machine's
TensorFlow sees none. A worker that got a GPU its TensorFlow cannot use stops the run with one
line, unless ``--allow-cpu-fallback``; every worker's devices land in metrics.json and the report."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import run_cli_process
from ray_cluster import local_ray_head, token_env

pytestmark = pytest.mark.slow
TINY = ("sketch", "--epochs", "1", "--units", "16", "--max-len", "40", "--workers", "2", "--patience", "0")


@pytest.fixture(scope="module")
def two_gpu_head():
    """A token-authenticated Ray head on 127.0.0.1 with 2 logical GPUs; the environment to join it."""
    base = Path(tempfile.mkdtemp(prefix="rf-gpu-"))  # short: Ray's socket paths must stay short
    # This sandbox cannot reach its own outward address, which Ray puts in place of 127.0.0.1 when
    # a driver joins a cluster on Linux; this switch (meant for macOS/Windows) keeps loopback.
    env = {**token_env(base), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    try:
        with local_ray_head(base, env, num_cpus=2, num_gpus=2) as head:
            yield head, env
    finally:
        shutil.rmtree(base, ignore_errors=True)


def train(two_gpu_head, run_dir: Path, *options):
    head, env = two_gpu_head
    return run_cli_process("train", *TINY, "--address", head.gcs, "--run-dir", run_dir, *options, timeout=600, env=env)


def test_a_gpu_tensorflow_cannot_use_stops_the_run_in_one_line(two_gpu_head, tmp_path):
    result = train(two_gpu_head, tmp_path / "run", "--gpus-per-worker", "1")
    # The workers agree on the refusal and end without an exception (issue #27): no worker
    # traceback for Ray to forward from the joined cluster's logs, the one `error:` line, exit 2.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert "DeviceError" not in result.stdout + result.stderr, result.stderr[-3000:]
    line = errors[0]
    assert "rnnforge-device-error" not in line
    assert "was assigned GPU" in line and "by Ray, but TensorFlow sees no GPU there" in line, line
    assert "--allow-cpu-fallback" in line and "rank " in line and "on node " in line
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_cpu_fallback_trains_and_records_each_workers_gpu(two_gpu_head, tmp_path):
    run_dir = tmp_path / "run"
    result = train(two_gpu_head, run_dir, "--gpus-per-worker", "1", "--allow-cpu-fallback")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "it trained on the CPU (--allow-cpu-fallback)" in result.stdout
    devices = json.loads((run_dir / "metrics.json").read_text())["devices"]
    assert [d["rank"] for d in devices] == [0, 1]
    assert all(len(d["assigned_gpus"]) == 1 and d["tensorflow_gpus"] == [] and d["cpu_fallback"] for d in devices)
    assert devices[0]["assigned_gpus"] != devices[1]["assigned_gpus"]  # one logical GPU each
    assert all(d["cuda_visible_devices"] == d["assigned_gpus"][0] for d in devices)
    assert {d["strategy"] for d in devices} == {"MultiWorkerMirroredStrategy"}
    assert {d["all_reduce"] for d in devices} == {"ring"}  # NCCL only where TensorFlow holds GPUs
    assert "| 0 |" in result.stdout and "none: trained on the CPU" in result.stdout  # the console's device table
    config = json.loads((run_dir / "config.json").read_text())
    assert config["allow_cpu_fallback"] is True and config["gpus_per_worker"] == 1


def test_half_a_gpu_each_puts_both_workers_on_one_device(two_gpu_head, tmp_path):
    run_dir = tmp_path / "run"
    result = train(two_gpu_head, run_dir, "--gpus-per-worker", "0.5", "--allow-cpu-fallback")
    assert result.returncode == 0, result.stderr[-3000:]
    devices = json.loads((run_dir / "metrics.json").read_text())["devices"]
    assert len(devices) == 2 and devices[0]["assigned_gpus"] == devices[1]["assigned_gpus"]
    assert len(devices[0]["assigned_gpus"]) == 1
