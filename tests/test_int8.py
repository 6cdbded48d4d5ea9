"""``export onnx --int8``: each task's quantization recipe, its accuracy gate, and ``bench --variants int8``."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np
import onnx
import pytest
from conftest import copy_run, error_line, run_cli

from rnnforge.core.errors import UserError
from rnnforge.core.stats import wilson_lower
from rnnforge.export.int8 import accuracy_gate, calibration_set, skip_requantized_uint8
from rnnforge.models import get_spec
from rnnforge.models.spec import Int8Spec, TaskData

pytestmark = pytest.mark.xdist_group("int8")  # one xdist worker builds the module's runs

#: The test models, trained for seconds, agree with their int8 variants on about 99.2 % of held-out
#: examples (many near-ties), which cannot establish 99 %: the export path is checked here against
#: 98 %, established on their held-out examples. The Wilson gate itself: tests/test_gates.py; the
#: 99 % gate on the trained demo models: docs/performance.md, "int8 variants".
FIXTURE_AGREEMENT = 0.98


@contextlib.contextmanager
def fixture_gate(task: str):
    """``task``'s spec with its int8 agreement threshold at ``FIXTURE_AGREEMENT``."""
    spec = get_spec(task)
    int8 = dataclasses.replace(spec.onnx.int8, min_top1_agreement=FIXTURE_AGREEMENT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            f"rnnforge.models.{task}.SPEC", dataclasses.replace(spec, onnx=dataclasses.replace(spec.onnx, int8=int8))
        )
        yield


@pytest.fixture(scope="module")
def int8_sketch(exported_run, tmp_path_factory):
    """A copy of the exported sketch run, exported again with --int8."""
    run = copy_run(exported_run, tmp_path_factory.mktemp("int8") / "sketch")
    with fixture_gate("sketch"):
        result = run_cli("export", "onnx", run, "--int8")
    assert result.returncode == 0, result.stderr
    assert "int8 model:" in result.stdout and "-[✓] top-1 agreement with TensorFlow" in result.stdout
    return run


def _ort_outputs(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.slow
def test_int8_sketch_is_dynamically_quantized_and_gated(int8_sketch):
    parity = json.loads((int8_sketch / "parity.json").read_text())
    int8 = parity["int8"]
    assert int8["passed"] and int8["top1_agreement"] >= 0.98 and int8["accuracy_drop"] <= 0.005
    recipe = {k: int8["recipe"][k] for k in ("static_ops", "dynamic_ops", "fp32_layers")}
    assert recipe == {"static_ops": [], "dynamic_ops": ["LSTM", "GRU", "MatMul", "Gemm"], "fp32_layers": []}
    assert int8["calibration"]["split"] is None and int8["calibration"]["examples"] == 0
    assert int8["quantized_ops"]["DynamicQuantizeLSTM"] == 2
    assert int8["gate"] == {"min_top1_agreement": FIXTURE_AGREEMENT, "max_accuracy_drop": 0.005}
    # judged on the held-out examples: the test split's 1,000, then the validation split's 1,000
    assert int8["split"] == parity["split"] and int8["held_out"] == {"test": 1000, "valid": 1000}
    assert int8["examples"] == 2000 and int8["top1_gate"]["verdict"] == "met"
    assert int8["top1_lower_bound"] >= FIXTURE_AGREEMENT and int8["top1_lower_bound"] < int8["top1_agreement"]
    assert int8["recipe"]["fp32_nodes"] == [n for n in int8["recipe"]["fp32_nodes"] if "conv" in n.lower()]
    assert set(int8["scores"]) == {"tensorflow", "fp32", "int8"}
    model = onnx.load(str(int8_sketch / "model.int8.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnforge.task"] == "sketch" and [i.name for i in model.graph.input] == ["strokes"]
    with np.load(int8_sketch / "eval.npz") as data:
        x, reference = data["x"][:64], data["reference"][:64]
    got = _ort_outputs(int8_sketch / "model.int8.onnx", x)
    assert got.shape == reference.shape and np.abs(got - reference).max() > 1e-6  # really quantized
    assert np.mean(got.argmax(-1) == reference.argmax(-1)) >= 0.95


@pytest.mark.slow
def test_int8_forecast_keeps_mae_within_the_gate(forecast_run, tmp_path):
    run = copy_run(forecast_run, tmp_path / "forecast")
    result = run_cli("export", "onnx", run, "--int8")
    assert result.returncode == 0, result.stderr
    assert "-[✓] mean MAE:" in result.stdout
    int8 = json.loads((run / "parity.json").read_text())["int8"]
    assert int8["passed"] and abs(int8["mae_change"]) <= 0.02 and int8["gate"] == {"max_mae_increase": 0.02}
    assert int8["scores"]["int8"]["mae"] == pytest.approx(int8["scores"]["fp32"]["mae"] * (1 + int8["mae_change"]))
    assert "DynamicQuantizeLSTM" in int8["quantized_ops"]


@pytest.mark.slow
def test_int8_video_calibrates_its_convolutions_on_training_clips(video_run, tmp_path):
    run = copy_run(video_run, tmp_path / "video")
    with fixture_gate("video"):
        result = run_cli("export", "onnx", run, "--int8", "--eval-examples", "1000")
    assert result.returncode == 0, result.stderr
    int8 = json.loads((run / "parity.json").read_text())["int8"]
    assert int8["passed"] and int8["top1_lower_bound"] >= FIXTURE_AGREEMENT
    # 240 test clips, the validation split's 240 (the convolutions calibrate on training clips), 520 drawn
    assert int8["held_out"] == {"test": 240, "valid": 240, "drawn": 520} and int8["examples"] == 1000
    assert int8["recipe"]["static_ops"] == ["Conv", "Relu", "AveragePool"]
    # every convolution QDQ; the LSTM and the dense layers stay fp32 (docs/performance.md: quantized
    # dynamically they changed most of int8's decisions on the hard set)
    assert int8["recipe"]["dynamic_ops"] == [] and int8["recipe"]["calibration"] == "minmax"
    kept = {n.name: n.op_type for n in onnx.load(str(run / "model.int8.onnx")).graph.node}
    assert sorted(kept[name] for name in int8["recipe"]["fp32_nodes"]) in (
        ["Gemm", "Gemm", "LSTM"],
        ["LSTM", "MatMul", "MatMul"],
    )
    config = json.loads((run / "config.json").read_text())
    assert int8["calibration"]["split"] == "train"
    assert 0 < int8["calibration"]["examples"] <= min(256, config["num_examples"]["train"])
    assert "calibrated on" in result.stdout and int8["calibration"]["note"] in result.stdout
    model = onnx.load(str(run / "model.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "LSTM" in ops and "DynamicQuantizeLSTM" not in ops  # QDQ convs
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    with np.load(run / "eval.npz") as data:
        x, reference = data["x"][:16], data["reference"][:16]
    assert _ort_outputs(run / "model.int8.onnx", x).shape == reference.shape


@pytest.mark.slow
def test_failing_int8_gate_exits_3_and_writes_nothing(forecast_run, tmp_path, monkeypatch):
    run = copy_run(forecast_run, tmp_path / "forecast")
    before = (run / "parity.json").read_text()
    spec = get_spec("forecast")
    impossible = dataclasses.replace(spec.onnx.int8, max_mae_increase=-0.5)  # must halve the MAE
    monkeypatch.setattr(
        "rnnforge.models.forecast.SPEC", dataclasses.replace(spec, onnx=dataclasses.replace(spec.onnx, int8=impossible))
    )
    result = run_cli("export", "onnx", run, "--int8")
    assert result.returncode == 3
    line = error_line(result)
    assert "the int8 variant fails its accuracy gate" in line and "mean MAE" in line and "nothing written" in line
    assert not (run / "model.int8.onnx").exists() and (run / "parity.json").read_text() == before


@pytest.mark.slow
def test_plain_export_removes_a_stale_int8_model(int8_sketch, tmp_path):
    run = copy_run(int8_sketch, tmp_path / "sketch")
    result = run_cli("export", "onnx", run)
    assert result.returncode == 0, result.stderr
    assert not (run / "model.int8.onnx").exists() and "removed the stale" in result.stdout and "--int8" in result.stdout
    assert "int8" not in json.loads((run / "parity.json").read_text())
    line = error_line(run_cli("bench", run, "--variants", "int8"))
    assert f"{run / 'model.int8.onnx'} does not exist" in line and "--int8" in line


@pytest.mark.slow
def test_bench_times_and_scores_the_int8_variant(int8_sketch, tmp_path):
    run = copy_run(int8_sketch, tmp_path / "sketch")
    args = ("--variants", "fp32,int8", "--batch-sizes", "1,8", "--warmup", "1", "--runs", "5", "--max-seconds", "0.5")
    result = run_cli("bench", run, *args)
    assert result.returncode == 0, result.stderr
    assert "batch 1: ORT int8" in result.stdout and "onnxruntime_int8 batch    8:" in result.stdout
    bench = json.loads((run / "bench" / "bench.json").read_text())
    assert set(bench["onnx_models"]) == {"fp32", "int8"} and set(bench["sessions"]) == {"fp32", "int8"}
    assert {r["engine"] for r in bench["latency"]} == {"tensorflow", "onnxruntime", "onnxruntime_int8"}
    assert set(bench["ratios_over_tf"]) == {"onnxruntime", "onnxruntime_int8"}
    accuracy = bench["accuracy"]
    assert accuracy["agreement_by_engine"]["onnxruntime_int8"]["top1_agreement"] >= FIXTURE_AGREEMENT
    with np.load(run / "eval.npz") as data:  # bench scores the stored examples (export's gate: 2,000 held out)
        x, y = data["x"], data["y"]
    stored = float(np.mean(_ort_outputs(run / "model.int8.onnx", x).argmax(-1) == y))
    assert accuracy["onnxruntime_int8"]["accuracy"] == pytest.approx(stored)
    int8_agreement = accuracy["agreement_by_engine"]["onnxruntime_int8"]
    assert int8_agreement["top1_examples"] == 1000 and int8_agreement["top1_gate"]["threshold"] == 0.99
    report = (run / "bench" / "report.md").read_text()
    assert "- int8: static none, dynamic LSTM, GRU, MatMul, Gemm" in report and "top-1 agreement" in report


def test_unknown_variant_lists_int8(exported_run):
    line = error_line(run_cli("bench", exported_run, "--variants", "int4"))
    assert "unknown variant 'int4'" in line and "fp32, fp16, int8" in line


# --- the gate and the calibration set, on their own --------------------------------------------


def _probabilities(labels: np.ndarray, classes: int = 4, confidence: float = 0.9) -> np.ndarray:
    out = np.full((len(labels), classes), (1 - confidence) / (classes - 1), dtype=np.float32)
    out[np.arange(len(labels)), labels] = confidence
    return out


@pytest.mark.parametrize(
    ("fixes", "breaks", "failing"),
    [
        (0, 0, ""),
        (20, 0, ""),  # 99.5 % agreement, 95 % lower bound 99.23 %; accuracy up half a point
        (30, 0, "top-1 agreement with TensorFlow"),  # 99.25 %, but its 95 % lower bound is 98.93 %
        (50, 0, "top-1 agreement with TensorFlow"),  # 98.75 %, though accuracy rises
        (0, 20, ""),  # accuracy down half a point: at the limit
        (0, 24, "accuracy"),  # down 0.6 points, agreement still established (bound 99.11 %)
    ],
)
def test_classification_gate(fixes, breaks, failing):
    """4,000 examples, TensorFlow right on 3,000: the int8 model differs from TensorFlow on ``fixes``
    examples TensorFlow gets wrong (it gets them right) and on ``breaks`` it gets right."""
    spec = get_spec("sketch")
    y = np.arange(4000) % 4
    tf_labels = y.copy()
    tf_labels[:1000] = (y[:1000] + 1) % 4
    int8_labels = tf_labels.copy()
    int8_labels[:fixes] = y[:fixes]
    int8_labels[2000 : 2000 + breaks] = (y[2000 : 2000 + breaks] + 1) % 4
    reference = _probabilities(tf_labels)
    record = accuracy_gate(spec, Int8Spec(), None, y, reference, reference, _probabilities(int8_labels), {})
    assert record["passed"] is (not failing)
    assert [f.split(":")[0] for f in record["failures"]] == ([failing] if failing else [])
    assert record["top1_agreement"] == pytest.approx(1 - (fixes + breaks) / 4000)
    assert record["top1_agreed"] == 4000 - fixes - breaks and record["examples"] == 4000
    assert record["top1_lower_bound"] == pytest.approx(wilson_lower(4000 - fixes - breaks, 4000))
    assert "95 % lower bound" in record["checks"][0] and "on 4,000 examples" in record["checks"][1]
    assert record["accuracy_drop"] == pytest.approx((breaks - fixes) / 4000)


@pytest.mark.parametrize(("change", "passes"), [(-0.05, True), (0.0, True), (0.019, True), (0.021, False)])
def test_forecast_gate_is_relative_to_the_fp32_model(change, passes):
    spec = get_spec("forecast")
    window = np.ones((3, 56, 1), dtype=np.float32)
    y = np.zeros((3, 7), dtype=np.float32)
    fp32 = np.full((3, 7), 100.0, dtype=np.float32)  # MAE 100
    record = accuracy_gate(spec, Int8Spec(), window, y, fp32, fp32, fp32 * (1 + change), {})
    assert record["passed"] is passes and record["mae_change"] == pytest.approx(change, rel=1e-4)
    assert [f.split(":")[0] for f in record["failures"]] == ([] if passes else ["mean MAE"])


def test_calibration_prefers_training_inputs_and_caps_their_bytes():
    static = Int8Spec(static_ops=("Conv",))
    big = np.zeros((400, 256, 256, 3), dtype=np.uint8)  # 192 KiB each: 85 fit in 16 MiB
    data = TaskData({"train": (big, np.zeros(400)), "valid": (big[:10], np.zeros(10))})
    x, record = calibration_set(data, static)
    assert record["split"] == "train" and len(x) == record["examples"] == 85 and record["examples_in_split"] == 400
    streamed = TaskData({"valid": (np.ones((600, 5, 3), np.float32), np.zeros(600))}, train_stream=lambda *a: None)
    x, record = calibration_set(streamed, static)
    assert record["split"] == "valid" and x.shape == (256, 5, 3) and "256 of 600 valid examples" in record["note"]
    x, record = calibration_set(data, Int8Spec())  # dynamic only: nothing to calibrate
    assert x is None and record["split"] is None and record["examples"] == 0
    empty = TaskData({"train": (big[:0], np.zeros(0)), "valid": (big[:0], np.zeros(0))})
    with pytest.raises(UserError, match="--int8: this task quantizes Conv statically"):
        calibration_set(empty, static)


def test_requantized_uint8_input_is_read_directly():
    """``Cast(uint8) -> QuantizeLinear(scale 1, zero 0)`` is the identity: dropped; any other scale stays."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def graph(scale: float):
        nodes = [
            helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("QuantizeLinear", ["f", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"]),
        ]
        inits = [
            numpy_helper.from_array(np.array(scale, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.uint8), "z"),
        ]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("frames", TensorProto.UINT8, [None, 4])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4])],
            inits,
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    x = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    model = graph(1.0)
    assert skip_requantized_uint8(model) == 1
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear"] and model.graph.node[0].input[0] == "frames"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"frames": x})[0], x.astype(np.float32))
    coarse = graph(2.0)
    assert skip_requantized_uint8(coarse) == 0 and len(coarse.graph.node) == 3
