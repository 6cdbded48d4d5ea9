"""Quantile forecasts (``--quantiles``): levels ordered by construction in the graph, the pinball
loss, the coverage and width scores, and the served/exported ``[batch, horizon, Q]`` output beside
the median ``forecast``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_run_dir, run_cli

from rnnforge.core.config import parse_quantiles
from rnnforge.core.errors import UserError
from rnnforge.models import get_spec
from rnnforge.models.forecast import (
    calibration_kernel,
    central_pairs,
    interval_scales,
    ordering_matrices,
    pinball,
    pinball_loss,
    quantile_scores,
)
from rnnforge.models.resolve import resolve_config

LEVELS = (0.1, 0.5, 0.9)


def test_levels_are_parsed_and_checked():
    assert parse_quantiles("0.1, 0.5,0.9") == LEVELS
    assert parse_quantiles([0.05, 0.5, 0.95]) == (0.05, 0.5, 0.95)  # config.json's list
    assert parse_quantiles("none") is None and parse_quantiles("") is None and parse_quantiles(None) is None
    for text, message in (
        ("0.5,0.1", "must increase: 0.1 follows 0.5"),
        ("0.1,0.1,0.5", "must increase"),
        ("0,0.5", "not a level in \\(0, 1\\)"),
        ("0.5,1", "not a level in \\(0, 1\\)"),
        ("0.1,half", "'half' is not a number"),
        ("0.1,0.9", "must include 0.5"),
    ):
        with pytest.raises(UserError, match=f"--quantiles.*{message}|{message}"):
            parse_quantiles(text)
    assert resolve_config("forecast", {"quantiles": "0.1,0.5,0.9"}).quantiles == LEVELS
    assert resolve_config("forecast", {}).quantiles is None  # the point forecaster stays the default
    with pytest.raises(UserError, match="--quantiles does not apply to task 'sketch'"):
        resolve_config("sketch", {"quantiles": "0.1,0.5,0.9"})
    with pytest.raises(UserError, match="--conformal scales the intervals of --quantiles"):
        resolve_config("forecast", {"conformal": True})
    with pytest.raises(UserError, match="--conformal needs a central interval"):
        resolve_config("forecast", {"conformal": True, "quantiles": "0.2,0.5,0.7"})


def test_ordering_matrices_order_any_raw_values():
    levels = (0.05, 0.1, 0.5, 0.75, 0.9)
    anchor, steps = ordering_matrices(levels)
    raw = np.random.default_rng(0).normal(0, 50, size=(1000, len(levels))).astype(np.float32)
    out = raw @ anchor + np.logaddexp(0, raw) @ steps  # softplus
    assert np.all(np.diff(out, axis=-1) >= 0)  # never crossing (a softplus may underflow to 0 in float32)
    moderate = raw / 20
    assert np.all(np.diff(moderate @ anchor + np.logaddexp(0, moderate) @ steps, axis=-1) > 0)
    np.testing.assert_allclose(out[:, 2], raw[:, 2])  # the median is its own raw value
    np.testing.assert_allclose(out[:, 3] - out[:, 2], np.logaddexp(0, raw[:, 3]), rtol=1e-5, atol=1e-4)


def test_pinball_values_on_known_inputs():
    y, q = np.array([10.0, 10.0, 10.0]), np.array([8.0, 10.0, 13.0])
    np.testing.assert_allclose(pinball(y, q, 0.9), [0.9 * 2, 0.0, 0.1 * 3])
    np.testing.assert_allclose(pinball(y, q, 0.1), [0.1 * 2, 0.0, 0.9 * 3])
    np.testing.assert_allclose(pinball(y, q, 0.5), np.abs(y - q) / 2)  # the median's: MAE / 2
    # the Keras loss: the mean over columns, each at its own level
    loss = pinball_loss([0.1, 0.5, 0.9])
    value = loss(np.array([[10.0, 10.0, 10.0]], np.float32), np.array([[8.0, 12.0, 13.0]], np.float32))
    assert float(np.asarray(value)[0]) == pytest.approx((0.1 * 2 + 0.5 * 2 + 0.1 * 3) / 3, rel=1e-6)
    weighted = pinball_loss([0.1, 0.5, 0.9], weights=[1.5, 6.0, 1.5])  # the median's MAE + the others' mean
    value = weighted(np.array([[10.0, 10.0, 10.0]], np.float32), np.array([[8.0, 12.0, 13.0]], np.float32))
    assert float(np.asarray(value)[0]) == pytest.approx(2.0 + (0.1 * 2 + 0.1 * 3) / 2, rel=1e-6)


def test_coverage_and_width_per_horizon_day():
    y = np.array([[1.0, 5.0], [2.0, 9.0], [3.0, 0.0], [4.0, 4.0]])
    low, high = np.full((4, 2), 1.5), np.full((4, 2), 4.0)
    quantiles = np.stack([low, (low + high) / 2, high], axis=-1)
    scores = quantile_scores(y, quantiles, LEVELS)
    # day +1: 2, 3, 4 of 1, 2, 3, 4 inside [1.5, 4] (bounds count); day +2: 4 of 5, 9, 0, 4
    assert scores["coverage_p10_p90_d+1"] == 0.75 and scores["coverage_p10_p90_d+2"] == 0.25
    assert scores["coverage_p10_p90"] == 0.5 and scores["nominal_p10_p90"] == 0.8
    assert scores["width_p10_p90"] == 2.5 and scores["width_p10_p90_d+2"] == 2.5
    assert scores["pinball_p50"] == pytest.approx(np.abs(y - 2.75).mean() / 2)
    assert central_pairs((0.05, 0.1, 0.5, 0.9, 0.95)) == [(0, 4), (1, 3)]
    assert central_pairs((0.1, 0.5, 0.8)) == []


def test_interval_scales_reach_the_coverage_asked():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, size=(400, 2))
    narrow = np.stack([np.full((400, 2), -0.5), np.zeros((400, 2)), np.full((400, 2), 0.5)], axis=-1)
    scales = interval_scales(y, narrow, LEVELS)
    assert all(s > 1.5 for s in scales)  # +-0.5 covers ~38 % of N(0, 1): widened
    kernel = calibration_kernel(scales, LEVELS)
    widened = (narrow.reshape(400, 6) @ kernel).reshape(400, 2, 3)
    covered = quantile_scores(y, widened, LEVELS)["coverage_p10_p90"]
    assert 0.78 <= covered <= 0.84
    np.testing.assert_allclose(calibration_kernel([1.0, 1.0], LEVELS), np.eye(6))


def test_no_conformal_leaves_the_intervals_as_trained():
    from rnnforge.models.forecast import calibrate

    spec = get_spec("forecast")
    config = resolve_config("forecast", {"quantiles": "0.1,0.5,0.9", "conformal": False})
    data = spec.load_data(config)
    assert calibrate(None, config, data) is None and "interval_scale" not in data.info
    point = resolve_config("forecast", {})
    assert calibrate(None, point, spec.load_data(point)) is None  # a point forecaster has no intervals


def _quantile_run(tmp_path, ensemble: int = 2):
    return make_run_dir(
        tmp_path / "forecast",
        task="forecast",
        epochs_steps=2,
        config_overrides={"ensemble": ensemble, "quantiles": "0.1,0.5,0.9", "units": 8},  # --conformal: on
    )


@pytest.mark.slow
def test_served_quantiles_never_cross_and_the_median_is_the_forecast():
    from tensorflow import keras

    spec = get_spec("forecast")
    config = resolve_config("forecast", {"ensemble": 2, "quantiles": "0.1,0.5,0.9", "units": 8, "epochs": 1})
    data = spec.load_data(config)
    keras.utils.set_random_seed(0)
    trained = spec.build_model(config, data.info)
    assert trained.output_shape == (None, 56, 2 * 7 * 3)
    for layer in trained.layers:  # wild weights: the raw levels land anywhere
        if layer.name.endswith("next_days"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * 50, np.random.default_rng(2).normal(0, 5, bias.shape).astype(np.float32)])
    served = spec.to_serving(trained, config, data.info)
    x, _ = data.splits["valid"]
    forecast, quantiles = served.predict(x, verbose=0)
    assert forecast.shape == (len(forecast), 7) and quantiles.shape == (len(forecast), 7, 3)
    assert np.all(np.diff(quantiles, axis=-1) >= 0)
    np.testing.assert_array_equal(forecast, quantiles[..., 1])
    x_train, y_train = data.splits["train"]
    targets = spec.targets_for_training(x_train, y_train, data.info)
    assert targets.shape == (len(y_train), 56, 42)
    np.testing.assert_array_equal(targets[..., 0], targets[..., 2])  # every level of day +1: that day


@pytest.mark.slow
def test_the_median_trains_as_a_point_forecaster_and_the_other_levels_only_their_outputs():
    """Training graph and loss (``_ordered_for_training``, ``training_loss``): the other levels'
    errors move no weight of the network below them, nor the median's output weights; the median's
    error moves no other level's output weights; the values are the served graph's; and the loss is
    the median's MAE plus the other levels' mean pinball loss."""
    import tensorflow as tf
    from tensorflow import keras

    spec = get_spec("forecast")
    config = resolve_config("forecast", {"ensemble": 1, "quantiles": "0.1,0.5,0.9", "units": 8, "epochs": 1})
    data = spec.load_data(config)
    keras.utils.set_random_seed(0)
    trained = spec.build_model(config, data.info)
    x, y = data.splits["train"]
    x = {k: a[:32] for k, a in x.items()} if isinstance(x, dict) else x[:32]
    targets = spec.targets_for_training(x, y[:32], data.info)
    median = np.tile([False, True, False], 7)  # day-major: the median column of every day
    head = trained.get_layer("next_days")
    below = [
        w
        for layer in trained.layers
        if layer.name.startswith(("rnn", "head_hidden", "day_type"))
        for w in layer.weights
    ]
    for columns, moved in ((~median, "others"), (median, "median")):
        with tf.GradientTape() as tape:
            out = tf.boolean_mask(trained(x, training=True), columns, axis=2)
            loss = tf.reduce_mean(tf.abs(tf.cast(targets[:, :, columns], tf.float32) - out))
        kernel_grad, *below_grads = tape.gradient(loss, [head.kernel, *below])
        kernel_grad = np.asarray(kernel_grad)
        below_grads = [
            None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in below_grads
        ]  # embeddings': sparse
        if moved == "others":
            assert all(g is None or not np.any(g) for g in below_grads)
            assert not np.any(kernel_grad[:, median]) and np.any(kernel_grad[:, ~median])
        else:
            assert all(g is not None and np.any(g) for g in below_grads)
            assert not np.any(kernel_grad[:, ~median]) and np.any(kernel_grad[:, median])
    served = spec.to_serving(trained, config, data.info)
    _, quantiles = served.predict(x, verbose=0)
    last = np.asarray(trained(x))[:, -1].reshape(-1, 7, 3)  # not calibrated yet: scales of 1
    np.testing.assert_allclose(quantiles, last * data.info["std"] + data.info["mean"], rtol=1e-5, atol=1e-2)
    loss = spec.loss_for(config, data.info)
    predicted = np.asarray(trained(x))
    errors = targets - predicted
    expected = np.abs(errors[..., median]).mean(-1) + np.mean(
        [np.maximum(t * errors[..., j::3], (t - 1) * errors[..., j::3]).mean(-1) for j, t in ((0, 0.1), (2, 0.9))],
        axis=0,
    )
    np.testing.assert_allclose(np.asarray(loss(targets, predicted)), expected, rtol=1e-5)


@pytest.mark.slow
def test_quantile_run_scores_and_exports_both_outputs_with_parity(tmp_path):
    run = _quantile_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    valid = metrics["valid"]
    for key in ("pinball_p10", "pinball_p50", "pinball_p90", "coverage_p10_p90", "width_p10_p90", "mae_vs_naive"):
        assert key in valid
    assert all(f"coverage_p10_p90_d+{d}" in valid for d in range(1, 8))
    assert valid["pinball_p50"] == pytest.approx(valid["mae"] / 2, rel=1e-6)  # the median is the point forecast
    # --conformal: scales fitted on these windows, so each day covers at least the nominal 80 % of them
    calibration = metrics["calibration"]
    assert calibration["fitted_on"] == "valid" and len(calibration["scales"]) == 7
    assert all(valid[f"coverage_p10_p90_d+{d}"] >= 0.8 for d in range(1, 8))
    assert 0 <= valid["coverage_p10_p90_crossfit"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["info"]["interval_scale"] == calibration["scales"] and config["conformal"] is None
    result = run_cli("export", "onnx", run)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(run / "model.onnx"))
    # no Loop/Scan, and no shape arithmetic: ONNX Runtime runs Shape and what computes from it on
    # the CPU even in a CUDA session, which a strict CUDA bench refuses (a Dense on [batch, 7, Q]
    # exports as Tensordot, whose Shape/Gather/Concat did)
    assert not {n.op_type for n in model.graph.node} & {"Loop", "Scan", "Shape"}
    assert [o.name for o in model.graph.output] == ["forecast", "quantiles"]
    dims = [d.dim_param or d.dim_value for d in model.graph.output[1].type.tensor_type.shape.dim]
    assert dims == ["batch", 7, 3]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["rnnforge.quantiles"]) == [0.1, 0.5, 0.9]
    assert json.loads(meta["rnnforge.interval_scale"]) == calibration["scales"]
    parity = json.loads((run / "parity.json").read_text())
    assert parity["passed"] and parity["outputs"]["quantiles"]["shape"][1:] == [7, 3]
    assert parity["outputs"]["forecast"]["within_atol"] and parity["outputs"]["quantiles"]["within_atol"]
    fast = ("--batch-sizes", "1", "--warmup", "1", "--runs", "10", "--max-seconds", "0.2", "--tf-baseline", "none")
    bench = run_cli("bench", run, *fast)  # the scores are ONNX Runtime's
    assert bench.returncode == 0, bench.stderr
    result = json.loads((run / "bench" / "bench.json").read_text())
    every = result["accuracy"]["every_output"]
    assert every["outputs"] == ["forecast", "quantiles"]
    # the median scored through ONNX Runtime is the timed engines' forecast
    assert every["mae"] == pytest.approx(result["accuracy"]["onnxruntime"]["mae"], rel=1e-6)
    assert every["coverage_p10_p90_d+3"] == pytest.approx(valid["coverage_p10_p90_d+3"], abs=0.02)
    report = (run / "bench" / "report.md").read_text()
    assert "| P10-P90 (80%) coverage |" in report
