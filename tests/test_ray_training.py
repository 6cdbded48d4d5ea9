"""A real 2-worker Ray Train run from the CLI, as a user starts it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_two_worker_ray_training_writes_a_complete_run(tmp_path):
    run_dir = tmp_path / "sketch"
    result = run_cli("train", "sketch", "--epochs", "2", "--workers", "2", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "epoch 1/2" in output and "epoch 2/2" in output and "samples/s" in output

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["epochs_run"] == 2 and metrics["restarts"] == 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["samples_per_s_per_worker"] * 2 == pytest.approx(metrics["samples_per_s"], rel=0.01)
    assert 0.2 < metrics["test"]["accuracy"] <= 1.0  # 10 classes: well above chance after 2 epochs

    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == "sketch" and config["workers"] == 2 and config["epochs"] == 2
    assert len(config["info"]["class_names"]) == 10 and config["info"]["delta_scale"] > 0

    from tensorflow import keras  # plain tf-keras loads the model, no custom objects

    model = keras.models.load_model(run_dir / "model.keras")
    assert model.output_shape == (None, 10)
    checkpoints = [c for c in (run_dir / "checkpoints" / "train").glob("checkpoint_*") if c.is_dir()]
    assert checkpoints and all((c / "model.keras").is_file() and (c / "state.json").is_file() for c in checkpoints)
    assert (run_dir / "training_curve.png").is_file() and (run_dir / "confusion_matrix.png").is_file()
