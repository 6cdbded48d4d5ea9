"""The forecaster's averaged ensemble (``--ensemble N``): N members of the same network with their
own weights, trained side by side on the same batches, each on its own loss; served (and exported)
as the average of the members' forecasts, with the same three inputs and one output."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_run_dir, run_cli

from rnnforge.core.errors import UserError
from rnnforge.models import get_spec
from rnnforge.models.common import compile_model
from rnnforge.models.resolve import resolve_config


def _built(members: int, seed: int = 3):
    """Config, data and the training model of a ``members``-member forecaster, built with ``seed``."""
    from tensorflow import keras

    spec = get_spec("forecast")
    config = resolve_config("forecast", {"ensemble": members, "epochs": 1})
    data = spec.load_data(config)
    keras.utils.set_random_seed(seed)
    return config, data, spec.build_model(config, data.info)


def _weights(model, prefix: str = "") -> dict:
    """Layer name without ``prefix`` -> its weights, for the layers whose names start with ``prefix``."""
    return {
        layer.name.removeprefix(prefix): layer.get_weights()
        for layer in model.layers
        if layer.weights and layer.name.startswith(prefix) and layer.name != "standardise"
    }


def test_ensemble_of_one_is_the_single_model_and_member_0_starts_as_it():
    _, _, single = _built(1)
    names = [layer.name for layer in single.layers]
    assert not any(name.startswith("m0_") or name.startswith("ensemble_") for name in names)
    assert single.output_shape == (None, 56, 7)
    _, _, pair = _built(2)
    assert pair.output_shape == (None, 56, 14) and single.count_params() * 2 == pair.count_params()
    first = _weights(pair, "m0_")
    assert first.keys() == _weights(single).keys()
    for name, weights in _weights(single).items():  # same seed: member 0 is today's network
        for a, b in zip(weights, first[name]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_members_train_on_their_own_losses_and_serving_averages_them():
    from tensorflow import keras

    spec = get_spec("forecast")
    config, data, trained = _built(2)
    compile_model(trained, spec, config, total_steps=8)
    (x, y), (x_valid, y_valid) = data.splits["train"], data.splits["valid"]
    targets = spec.targets_for_training(x, y, data.info)
    assert targets.shape == (len(y), 56, 14)
    np.testing.assert_array_equal(targets[..., :7], targets[..., 7:])
    trained.fit({k: a[:256] for k, a in x.items()}, targets[:256], batch_size=32, epochs=1, verbose=0)
    m0, m1 = _weights(trained, "m0_"), _weights(trained, "m1_")
    assert m0.keys() == m1.keys() and all(not np.allclose(m0[k][0], m1[k][0]) for k in m0)

    # the loss is the mean of the members' own MAEs on the same windows
    valid_targets = spec.targets_for_training(x_valid, y_valid, data.info)
    stacked = trained.predict(x_valid, verbose=0)
    own = [np.abs(stacked[..., 7 * i : 7 * (i + 1)] - valid_targets[..., :7]).mean() for i in range(2)]
    loss = trained.evaluate(x_valid, valid_targets, verbose=0)[0]
    assert loss == pytest.approx(np.mean(own), rel=1e-5) and own[0] != pytest.approx(own[1])

    # served: the average of what each member, served alone, forecasts
    served = spec.to_serving(trained, config, data.info)
    single_config, single_info = resolve_config("forecast", {"ensemble": 1, "epochs": 1}), {**data.info, "ensemble": 1}
    alone = []
    for prefix in ("m0_", "m1_"):
        member = spec.to_serving(spec.build_model(single_config, single_info), single_config, single_info)
        for name, weights in _weights(trained, prefix).items():
            member.get_layer(name).set_weights(weights)
        alone.append(member.predict(x_valid, verbose=0))
    assert np.abs(alone[0] - alone[1]).max() > 1.0
    np.testing.assert_allclose(served.predict(x_valid, verbose=0), np.mean(alone, axis=0), rtol=1e-5, atol=0.1)
    assert isinstance(served.get_layer("ensemble_average"), keras.layers.Average)


@pytest.mark.slow
def test_ensemble_exports_three_inputs_one_output_with_parity(tmp_path):
    run = make_run_dir(tmp_path / "forecast", task="forecast", epochs_steps=2, config_overrides={"ensemble": 2})
    result = run_cli("export", "onnx", run)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(run / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert not set(ops) & {"Loop", "Scan"} and ops.count("LSTM") == 4  # two layers per member
    assert [i.name for i in model.graph.input] == ["series", "past_day_type", "future_day_type"]
    assert [o.name for o in model.graph.output] == ["forecast"]
    parity = json.loads((run / "parity.json").read_text())
    assert parity["passed"] and parity["outputs"]["forecast"]["shape"][1] == 7
    assert json.loads((run / "config.json").read_text())["ensemble"] == 2


def test_ensemble_below_one_is_refused():
    with pytest.raises(UserError, match="--ensemble must be at least 1, got 0"):
        resolve_config("forecast", {"ensemble": 0})
    with pytest.raises(UserError, match="--ensemble does not apply to task 'sketch'"):
        resolve_config("sketch", {"ensemble": 2})
