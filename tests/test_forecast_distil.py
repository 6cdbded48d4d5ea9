"""Issue #31: the forecaster's accuracy at one network's serving cost.

``--distil`` trains a student (the single network's architecture, layers ``student_``) beside the
ensemble's members on their averaged forecast and the true targets; ``model.onnx`` is the student,
``model.ensemble.onnx`` the ensemble, each with its parity gate. ``export onnx --fuse-members``
exports an ensemble as one network: one LSTM per layer with block-diagonal weights, so 2 LSTM nodes
for any number of members, with parity against the averaged ensemble."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_run_dir, run_cli

from rnnforge.core.errors import UserError
from rnnforge.models import forecast, get_spec
from rnnforge.models.common import compile_model
from rnnforge.models.resolve import resolve_config


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.slow
def test_distil_trains_a_student_on_true_and_soft_targets_beside_the_members():
    from tensorflow import keras

    spec = get_spec("forecast")
    config = resolve_config("forecast", {"ensemble": 2, "distil": True, "epochs": 1})
    data = spec.load_data(config)
    keras.utils.set_random_seed(3)
    trained = spec.build_model(config, data.info)
    assert trained.output_shape == (None, 56, 28)  # 2 members, the student, the student's gap to them
    (x, y), (x_valid, y_valid) = data.splits["train"], data.splits["valid"]
    targets = spec.targets_for_training(x, y, data.info)
    np.testing.assert_array_equal(targets[..., 14:21], targets[..., :7])  # the student's true targets
    assert not targets[..., 21:].any()  # its gap to the members' average, to be zero
    compile_model(trained, spec, config, total_steps=8)
    before = {w.name: w.numpy() for w in trained.weights}
    trained.fit({k: a[:256] for k, a in x.items()}, targets[:256], batch_size=32, epochs=1, verbose=0)
    assert all(not np.allclose(before[w.name], w.numpy()) for w in trained.weights if "kernel" in w.name)

    # the loss: the members' and the student's MAE, and the student's distance to the members' average
    stacked = trained.predict(x_valid, verbose=0)
    valid_targets = spec.targets_for_training(x_valid, y_valid, data.info)
    members, student = stacked[..., :14], stacked[..., 14:21]
    teacher = (members[..., :7] + members[..., 7:]) / 2
    np.testing.assert_allclose(stacked[..., 21:], student - teacher, atol=1e-5)
    errors = (  # per window and step: 2 members' 7 days, the student's 7 days, its 7-day gap
        np.abs(members - valid_targets[..., :14]).sum(-1)
        + np.abs(student - valid_targets[..., :7]).sum(-1)
        + np.abs(student - teacher).sum(-1)
    )
    assert trained.evaluate(x_valid, valid_targets, verbose=0)[0] == pytest.approx(errors.mean() / 28, rel=1e-4)

    # served: the student alone, one network's layers; the companion: the members' average
    served = spec.to_serving(trained, config, data.info)
    single_info = {**data.info, "ensemble": 1, "distil": False}
    single_config = resolve_config("forecast", {"ensemble": 1})
    single = spec.to_serving(spec.build_model(single_config, single_info), single_config, single_info)
    assert served.count_params() == single.count_params()
    assert {layer.name for layer in served.layers if layer.weights} == {
        f"student_{n}" for n in ("day_type_embedding", "rnn0", "rnn1", "head_hidden", "next_days")
    }
    ensemble = spec.companions(trained, config, data.info)["ensemble"]
    assert ensemble.get_layer("ensemble_average") is not None


@pytest.mark.slow
def test_distilled_run_exports_the_student_and_the_ensemble_with_parity(tmp_path):
    run = make_run_dir(
        tmp_path / "forecast", task="forecast", epochs_steps=2, config_overrides={"ensemble": 2, "distil": True}
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["companions"] == ["ensemble"]
    assert metrics["valid"]["mae_vs_naive"] != metrics["ensemble"]["valid"]["mae_vs_naive"]
    assert (run / "model.ensemble.keras").is_file()
    result = run_cli("export", "onnx", run)
    assert result.returncode == 0, result.stderr
    assert "ensemble model:" in result.stdout
    assert _ops(run / "model.onnx").count("LSTM") == 2  # the student: one network
    assert _ops(run / "model.ensemble.onnx").count("LSTM") == 4
    parity = json.loads((run / "parity.json").read_text())
    assert parity["passed"] and parity["ensemble"]["passed"]
    assert parity["ensemble"]["onnx_path"].endswith("model.ensemble.onnx")
    assert (run / "model.onnx").stat().st_size * 1.5 < (run / "model.ensemble.onnx").stat().st_size

    bench = run_cli(
        "bench",
        run,
        "--variants",
        "fp32,ensemble",
        "--batch-sizes",
        "1",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--tf-baseline",
        "none",
    )
    assert bench.returncode == 0, bench.stderr
    report = (run / "bench" / "report.md").read_text()
    assert "onnxruntime_ensemble" in report and "Beside it, the run's `ensemble`" in report

    fused = run_cli("export", "onnx", run, "--fuse-members")  # the ensemble beside the student, fused
    assert fused.returncode == 0, fused.stderr
    assert _ops(run / "model.ensemble.onnx").count("LSTM") == 2
    assert json.loads((run / "parity.json").read_text())["ensemble"]["fused_members"] == 2


@pytest.mark.parametrize("members, quantiles", [(2, None), (3, None), (2, "0.1,0.5,0.9")])
@pytest.mark.slow
def test_fused_ensemble_has_two_lstm_nodes_no_loop_and_parity(tmp_path, members, quantiles):
    options = {"ensemble": members, **({"quantiles": quantiles} if quantiles else {})}
    run = make_run_dir(tmp_path / "forecast", task="forecast", epochs_steps=2, config_overrides=options)
    result = run_cli("export", "onnx", run, "--fuse-members")
    assert result.returncode == 0, result.stderr
    ops = _ops(run / "model.onnx")
    assert ops.count("LSTM") == 2 and not set(ops) & {"Loop", "Scan"}
    model = onnx.load(str(run / "model.onnx"))
    hidden = [a.i for n in model.graph.node if n.op_type == "LSTM" for a in n.attribute if a.name == "hidden_size"]
    assert hidden == [members * 64] * 2
    assert [i.name for i in model.graph.input] == ["series", "past_day_type", "future_day_type"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnforge.fused_members"] == str(members)
    parity = json.loads((run / "parity.json").read_text())  # against the averaged ensemble (model.keras)
    assert parity["passed"] and parity["max_abs_diff"] <= parity["atol"]
    assert parity["fused_members"] == members and parity["recurrent_nodes"] == 2
    if quantiles:  # both outputs, each within the gate; no shape arithmetic for a GPU to leave on the CPU
        assert [o.name for o in model.graph.output] == ["forecast", "quantiles"]
        assert parity["outputs"]["quantiles"]["shape"][1:] == [7, 3]
        assert all(output["within_atol"] for output in parity["outputs"].values())
        assert "Shape" not in ops


@pytest.mark.parametrize(
    "covariates,rnn,quantiles", [("day_type", "gru", None), ("none", "lstm", None), ("day_type", "lstm", "0.1,0.5,0.9")]
)
@pytest.mark.slow
def test_fused_form_computes_the_average_of_the_members(covariates, rnn, quantiles):
    """Quantiles: each member's levels ordered on its own, then averaged, then the conformal scales."""
    spec = get_spec("forecast")
    options = {"ensemble": 3, "covariates": covariates, "rnn": rnn, "units": 8}
    config = resolve_config("forecast", {**options, **({"quantiles": quantiles} if quantiles else {})})
    data = spec.load_data(config)
    info = {**data.info, "interval_scale": [1.1, 1.2, 1.3, 1.0, 0.9, 1.5, 1.25]} if quantiles else data.info
    trained = spec.build_model(config, info)
    rng = np.random.default_rng(0)  # every weight non-zero, so a misplaced block shows
    trained.set_weights([w + rng.normal(0, 0.2, w.shape).astype(w.dtype) for w in trained.get_weights()])
    served = spec.to_serving(trained, config, info)
    fused = forecast.fused_serving_model(served, config, info)
    x = data.splits["valid"][0]
    wants, gots = served.predict(x, verbose=0), fused.predict(x, verbose=0)
    for want, got in zip(*((wants, gots) if quantiles else ([wants], [gots])), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    if quantiles:
        assert (np.diff(gots[1], axis=-1) >= 0).all()  # still ordered


@pytest.mark.slow
def test_distil_and_fuse_refused_where_they_do_not_apply(tmp_path):
    with pytest.raises(
        UserError, match="--distil trains one network from an ensemble's members: it needs --ensemble 2"
    ):
        resolve_config("forecast", {"ensemble": 1, "distil": True})
    assert resolve_config("forecast", {"ensemble": 1}).distil is False  # a default --distil leaves one network alone
    with pytest.raises(UserError, match="--distil does not apply to task 'sketch'"):
        resolve_config("sketch", {"distil": True})
    run = make_run_dir(tmp_path / "single", task="forecast", epochs_steps=1, config_overrides={"ensemble": 1})
    result = run_cli("export", "onnx", run, "--fuse-members")
    assert result.returncode == 2 and "nothing to fuse" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
