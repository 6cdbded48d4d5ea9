"""``rnnforge export onnx``: native recurrent ops, dynamic axes, metadata, and the parity gate."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from conftest import error_line, run_cli

from rnnforge.core.errors import UserError


def test_export_writes_a_native_lstm_graph_with_metadata(exported_run):
    model = onnx.load(str(exported_run / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "LSTM" in ops and not ops & {"Loop", "Scan"}
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "strokes" and out.name == "probabilities"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[1], str) and dims[2] == 3
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnforge.task"] == "sketch" and meta["rnnforge.opset"] == "17"
    assert json.loads(meta["rnnforge.class_names"])[:3] == ["circle", "square", "triangle"]
    assert model.opset_import[0].version == 17


def test_parity_record_matches_a_fresh_onnxruntime_run(exported_run):
    import onnxruntime as ort
    from tensorflow import keras

    parity = json.loads((exported_run / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["batch"] == 256
    assert parity["top1_agreement"] == 1.0
    # Independent check: any batch size and sequence length gives TF's answer.
    x = np.random.default_rng(0).normal(0, 10, size=(3, 41, 3)).astype(np.float32)
    x[..., 2] = (x[..., 2] > 0).astype(np.float32)
    session = ort.InferenceSession(str(exported_run / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = keras.models.load_model(exported_run / "model.keras", compile=False)(x).numpy()
    np.testing.assert_allclose(session.run(None, {"strokes": x})[0], expected, atol=1e-5)


def test_parity_failure_writes_nothing(exported_run, tmp_path):
    target = tmp_path / "strict.onnx"
    before = (exported_run / "parity.json").read_text()
    result = run_cli("export", "onnx", exported_run, "--atol", "1e-12", "--output", target)
    assert result.returncode == 3
    assert "differs from TensorFlow beyond atol 1e-12" in error_line(result)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert (exported_run / "parity.json").read_text() == before


def test_unsupported_opset_is_refused(trained_run):
    assert "--opset 19 is not supported" in error_line(run_cli("export", "onnx", trained_run, "--opset", "19"))


def test_keras_masking_is_refused_as_a_loop():
    """Masking converts to a Loop node; export must refuse it rather than ship a 30x slower model."""
    from tensorflow import keras

    from rnnforge.export.onnx_export import check_graph, convert
    from rnnforge.models import get_spec

    spec = get_spec("sketch")
    inputs = keras.Input((None, 3), name="strokes")
    x = keras.layers.Masking()(inputs)
    x = keras.layers.LSTM(4)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probabilities")(x))
    onnx_model = convert(model, spec, 17)
    with pytest.raises(UserError, match="Loop"):
        check_graph(onnx_model, spec)
    renamed = dataclasses.replace(
        spec, onnx=dataclasses.replace(spec.onnx, outputs=(dataclasses.replace(spec.onnx.outputs[0], name="logits"),))
    )
    with pytest.raises(UserError, match="output names"):
        check_graph(_no_loop(onnx_model), renamed)


def _no_loop(onnx_model):
    """The same model with its Loop nodes dropped, to reach the name check."""
    copy = onnx.ModelProto()
    copy.CopyFrom(onnx_model)
    keep = [n for n in copy.graph.node if n.op_type not in ("Loop", "Scan")]
    del copy.graph.node[:]
    copy.graph.node.extend(keep)
    return copy


def test_graph_rewrites_move_layout_ops_to_uint8_and_fold_the_scale():
    """Cast -> Mul -> Add(0) -> Reshape -> Transpose -> Conv becomes Reshape -> Transpose -> Cast -> Conv
    (scaled weights), with the same outputs on ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from rnnforge.export.graph_opt import optimise

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "zero"], ["shifted"]),
            helper.make_node("Reshape", ["shifted", "shape"], ["per_frame"]),
            helper.make_node("Transpose", ["per_frame"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "W"], ["out"], pads=[1, 1, 1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, [2, 5, 8, 8, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [10, 4, 8, 8])],
        [
            numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([-1, 8, 8, 3], np.int64), "shape"),
            numpy_helper.from_array(weights, "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.integers(0, 256, size=(2, 5, 8, 8, 3), dtype=np.uint8)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"frames": x}
    )[0]
    counts = optimise(model)
    onnx.checker.check_model(model, full_check=True)
    assert counts == {
        "layout_ops_hoisted": 4,
        "scales_folded_into_conv": 1,
        "zero_adds_removed": 1,
        "zero_initial_states_dropped": 0,
    }
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Transpose", "Cast", "Conv"]
    assert {i.name for i in model.graph.initializer} == {"shape", "W"}
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"frames": x}
    )[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_export_drops_the_zero_initial_state_chains(exported_run):
    """Each Keras LSTM brings 8 nodes that build zeros; ONNX LSTM starts from zeros anyway."""
    model = onnx.load(str(exported_run / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LSTM") == 2 and "Expand" not in ops and "ConstantOfShape" not in ops
    assert all(len(n.input) <= 5 for n in model.graph.node if n.op_type == "LSTM")
    rewrites = json.loads((exported_run / "parity.json").read_text())["graph_rewrites"]
    assert rewrites["zero_initial_states_dropped"] == 4  # initial_h and initial_c of two layers
