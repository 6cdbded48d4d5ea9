"""Multi-GPU plumbing without a GPU: a Ray head that declares 2 logical GPUs assigns them to the
workers through ``CUDA_VISIBLE_DEVICES`` exactly as a GPU node does, while this machine's
TensorFlow sees none. A worker that got a GPU its TensorFlow cannot use stops the run with one
line, unless ``--allow-cpu-fallback``; every worker's devices land in metrics.json and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli_process
from ray_cluster import another_ray_instance

pytestmark = [pytest.mark.slow, pytest.mark.ray]
TINY = ("sketch", "--epochs", "1", "--units", "16", "--max-len", "40", "--workers", "2", "--patience", "0")


def train(ray_head, run_dir: Path, *options):
    """A TINY run on the shared head of 2 logical GPUs (conftest's ``ray_head``)."""
    head, env = ray_head
    return run_cli_process("train", *TINY, "--address", head.gcs, "--run-dir", run_dir, *options, timeout=600, env=env)


def test_a_gpu_tensorflow_cannot_use_stops_the_run_in_one_line(ray_head, tmp_path):
    """With another Ray instance on the machine too: Ray's own helpers in the job (Ray Train's
    placement-group cleaner) find the joined cluster by the address rnnforge gives them, not by
    looking for one ("Found multiple active Ray instances" and a forwarded traceback)."""
    with another_ray_instance(tmp_path / "other"):
        result = train(ray_head, tmp_path / "run", "--gpus-per-worker", "1")
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


def test_cpu_fallback_trains_and_records_each_workers_gpu(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    result = train(ray_head, run_dir, "--gpus-per-worker", "1", "--allow-cpu-fallback")
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


def test_half_a_gpu_each_puts_both_workers_on_one_device(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    result = train(ray_head, run_dir, "--gpus-per-worker", "0.5", "--allow-cpu-fallback")
    assert result.returncode == 0, result.stderr[-3000:]
    devices = json.loads((run_dir / "metrics.json").read_text())["devices"]
    assert len(devices) == 2 and devices[0]["assigned_gpus"] == devices[1]["assigned_gpus"]
    assert len(devices[0]["assigned_gpus"]) == 1
