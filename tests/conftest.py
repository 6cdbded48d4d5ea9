"""Shared fixtures. Tests never download: they use the embedded synthetic data, files they
write, and the real samples in ../shared/data/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``rnnforge ARGS`` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "rnnforge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one-line error a failed command printed (asserting it is one line, no traceback)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def make_run_dir(
    path: Path, task: str = "sketch", epochs_steps: int = 30, config_overrides: dict | None = None
) -> Path:
    """A finished run without Ray: a briefly trained model written by ``finish_run``."""
    import numpy as np
    import ray.train
    from tensorflow import keras

    from rnnforge.cluster.finish import finish_run
    from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from rnnforge.core.run_dir import RunDir
    from rnnforge.models import get_spec
    from rnnforge.models.common import compile_model
    from rnnforge.models.resolve import resolve_config

    config = resolve_config(task, {"epochs": 1, **(config_overrides or {})})
    spec = get_spec(task)
    data = spec.load_data(config)
    keras.utils.set_random_seed(0)
    model = spec.build_model(config, data.info)
    compile_model(model, spec, config, total_steps=epochs_steps)
    x, y = data.splits["train"]
    y = spec.targets_for_training(x, y, data.info)
    x_valid, y_valid = data.splits["valid"]
    history = model.fit(
        x[: 64 * epochs_steps],
        y[: 64 * epochs_steps],
        batch_size=64,
        epochs=1,
        verbose=0,
        validation_data=(x_valid, spec.targets_for_training(x_valid, y_valid, data.info)),
    )
    entry = {
        "epoch": 1,
        **{k: float(v[-1]) for k, v in history.history.items()},
        "seconds": 1.0,
        "samples_per_s": 1.0,
        "samples_per_s_per_worker": 1.0,
    }
    ckpt = path / "_ckpt"
    ckpt.mkdir(parents=True)
    model.save(ckpt / CHECKPOINT_MODEL, save_format="keras_v3")
    (ckpt / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 1, "history": [entry], "restarts": 0, "world_size": 1}))
    finish_run(config, RunDir(path), ray.train.Checkpoint.from_directory(ckpt), 1.0)
    assert np.isfinite(entry["loss"])
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished (briefly trained, not Ray) sketch run dir, shared read-only by the tests."""
    return make_run_dir(tmp_path_factory.mktemp("run") / "sketch")


@pytest.fixture(scope="session")
def exported_run(trained_run) -> Path:
    """``trained_run`` after ``rnnforge export onnx``."""
    result = run_cli("export", "onnx", trained_run)
    assert result.returncode == 0, result.stderr
    return trained_run


@pytest.fixture(scope="session")
def forecast_run(tmp_path_factory) -> Path:
    """A finished (briefly trained, not Ray) forecast run on the synthetic series, exported."""
    path = make_run_dir(tmp_path_factory.mktemp("run") / "forecast", task="forecast", epochs_steps=10)
    result = run_cli("export", "onnx", path)
    assert result.returncode == 0, result.stderr
    return path


#: Python source that makes the training stack unimportable, as on an inference box with only the
#: serving install: prepend it to a ``python -c`` script.
BLOCK_TRAINING_STACK = """
import importlib.abc, sys
class _BlockTrainingStack(importlib.abc.MetaPathFinder):
    BLOCKED = {"tensorflow", "tf_keras", "keras", "ray", "tf2onnx", "tensorflow_datasets"}
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: no training stack here)", name=name)
        return None
sys.meta_path.insert(0, _BlockTrainingStack())
"""
