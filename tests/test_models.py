"""The sketch model builds, trains a step, and honours the shared RNN options."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rnnforge.models import get_spec
from rnnforge.models.common import compile_model, learning_rate
from rnnforge.models.resolve import resolve_config


@pytest.fixture(scope="module")
def small_data():
    spec = get_spec("sketch")
    config = resolve_config("sketch", {})
    return spec, config, spec.load_data(config)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@pytest.mark.slow
def test_sketch_model_trains_a_step(small_data, rnn):
    from tensorflow import keras

    spec, config, data = small_data
    config = replace(config, rnn=rnn)
    model = spec.build_model(config, data.info)
    compile_model(model, spec, config, total_steps=10)
    x, y = data.splits["train"]
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x[:32], y[:32])[0]
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    probs = model.predict(x[:5], verbose=0)
    assert probs.shape == (5, len(data.info["class_names"]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    rnn_layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU))]
    assert len(rnn_layers) == 2
    for layer in rnn_layers:
        assert layer.recurrent_dropout == 0
        if rnn == "gru":
            assert isinstance(layer, keras.layers.GRU) and layer.reset_after
    # Any sequence length works: the time axis is dynamic.
    assert model.predict(x[:2, :37], verbose=0).shape == (2, len(data.info["class_names"]))


def test_clipping_and_schedule_reach_the_optimizer(small_data):
    spec, config, data = small_data
    model = spec.build_model(config, data.info)
    compile_model(model, spec, replace(config, clipnorm=0.5, lr_schedule="cosine"), total_steps=100)
    assert model.optimizer.global_clipnorm == 0.5
    schedule = learning_rate(replace(config, learning_rate=1e-3, lr_schedule="cosine", lr_warmup=0), total_steps=100)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5), rel=1e-4)
    assert float(schedule(100)) == pytest.approx(1e-3 * 0.05, rel=1e-4)
    assert learning_rate(replace(config, learning_rate=1e-3, lr_schedule="constant", lr_warmup=0), 100) == 1e-3
    # (the warm-up before the schedule: tests/test_learning_warmup.py)


def test_input_scaling_lives_in_the_model(small_data):
    """The model takes raw pixel offsets: its first layer divides (dx, dy) by the data's scale."""
    spec, config, data = small_data
    model = spec.build_model(config, data.info)
    scale_layer = model.get_layer("scale")
    out = scale_layer(np.array([[[data.info["delta_scale"], -2 * data.info["delta_scale"], 1.0]]], np.float32))
    np.testing.assert_allclose(np.asarray(out), [[[1.0, -2.0, 1.0]]], rtol=1e-5)
