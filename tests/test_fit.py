"""The one in-process fit (``cluster.fit``) that the Ray worker and every benchmark train with."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from rnnforge.cluster.fit import batches, fit, prepare
from rnnforge.models.resolve import resolve_config


@pytest.mark.slow
def test_the_in_process_fit_validates_on_every_window_and_trains():
    """A worker's fit outside Ray: the global batch of one worker, one pass over every validation
    example (not whole batches only), and ``model.fit`` for ``--epochs``."""
    config = resolve_config("forecast", {"dataset": "synthetic", "epochs": 1, "workers": 1, "units": 8})
    run = prepare(config)
    train, valid = batches(run)
    assert run.global_batch == config.batch_size
    assert sum(len(y) for _, y in valid) == run.data.num_examples("valid")
    history = fit(run, train, valid)
    assert len(history.history["loss"]) == 1 and "val_loss" in history.history


def test_the_in_process_fit_imports_neither_ray_nor_tensorflow():
    """Benchmarks and tools import it freely; TensorFlow comes when a model is prepared."""
    code = "import sys, rnnforge.cluster.fit; print(sorted({'ray', 'tensorflow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
