"""The forecaster: trained seq-to-seq, served (and exported) as raw window -> raw next days."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import copy_run, run_cli

from rnnforge.models import get_spec
from rnnforge.models.resolve import resolve_config


def test_serving_model_is_the_last_step_of_the_training_model():
    from tensorflow import keras

    spec = get_spec("forecast")
    # with them: test_forecast_covariates.py; several members: test_forecast_ensemble.py
    config = resolve_config("forecast", {"covariates": "none", "ensemble": 1})
    data = spec.load_data(config)
    keras.utils.set_random_seed(1)
    trained = spec.build_model(config, data.info)
    served = spec.to_serving(trained, config, data.info)
    x = data.splits["valid"][0][:5]
    every_step = trained.predict(x, verbose=0)
    assert every_step.shape == (5, 56, 7)
    expected = every_step[:, -1, :] * data.info["std"] + data.info["mean"]
    np.testing.assert_allclose(served.predict(x, verbose=0), expected, rtol=1e-4)


@pytest.mark.slow
def test_forecast_onnx_takes_and_returns_raw_values(forecast_run):
    import onnxruntime as ort
    from tensorflow import keras

    model = onnx.load(str(forecast_run / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "Scan"} and "LSTM" in ops
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnforge.task"] == "forecast" and json.loads(meta["rnnforge.window"]) == 56
    assert json.loads(meta["rnnforge.horizon"]) == 7
    inp = model.graph.input[0]  # then the day types (tests/test_forecast_covariates.py)
    assert inp.name == "series" and [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [56, 1]
    parity = json.loads((forecast_run / "parity.json").read_text())
    assert parity["passed"] and parity["outputs"]["forecast"]["shape"][1] == 7

    config = json.loads((forecast_run / "config.json").read_text())
    x = get_spec("forecast").load_data(config).splits["test"][0][:16]
    assert x["series"].mean() > 1e5  # raw riders, no scaling outside the model
    session = ort.InferenceSession(str(forecast_run / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, dict(x))[0]
    tf_out = keras.models.load_model(forecast_run / "model.keras", compile=False).predict(x, verbose=0)
    assert onnx_out.shape == (16, 7) and onnx_out.mean() > 1e5
    np.testing.assert_allclose(onnx_out, tf_out, atol=1.0, rtol=1e-5)


def test_forecast_run_scores_and_plots(forecast_run):
    metrics = json.loads((forecast_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["examples"] > 100
    assert [k for k in test if k.startswith("mae_d+")] == [f"mae_d+{d}" for d in range(1, 8)]
    assert test["mae"] == pytest.approx(np.mean([test[f"mae_d+{d}"] for d in range(1, 8)]))
    assert test["mae_vs_naive"] == pytest.approx(test["mae"] / test["naive_mae"])
    for png in ("forecast.png", "mae_per_horizon.png", "training_curve.png"):
        assert (forecast_run / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_forecast_bench_reports_mae_per_horizon(forecast_run, tmp_path):
    forecast_run = copy_run(forecast_run, tmp_path / "forecast")  # bench writes bench/ into the run
    result = run_cli(
        "bench",
        forecast_run,
        *("--batch-sizes", "1,16", "--warmup", "1", "--runs", "10", "--max-seconds", "0.3", "--tf-baseline", "none"),
    )  # the scores are the point: TensorFlow's come from the eval set's reference outputs
    assert result.returncode == 0, result.stderr
    bench = json.loads((forecast_run / "bench" / "bench.json").read_text())
    accuracy = bench["accuracy"]
    assert accuracy["split"] == "test" and accuracy["agreement"]["max_abs_diff"] < 1.0
    assert accuracy["onnxruntime"]["mae"] == pytest.approx(accuracy["tensorflow"]["mae"], rel=1e-5)
    report = (forecast_run / "bench" / "report.md").read_text()
    assert "| horizon day | d+1 |" in report and "naive MAE" in report
