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
    assert dims == ["batch", "time", 3]  # the spec's axis names, not tf2onnx's unk__N
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 10]
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


@pytest.mark.slow
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


def test_dynamic_axes_carry_the_spec_names(forecast_run):
    """``TensorSpec.dynamic_axes()`` reaches the graph: named axes are ``dim_param``, the rest fixed."""
    from rnnforge.models import get_spec

    spec = get_spec("forecast")
    assert spec.onnx.inputs[0].dynamic_axes() == {0: "batch"}
    graph = onnx.load(str(forecast_run / "model.onnx")).graph
    series = graph.input[0].type.tensor_type.shape.dim
    assert series[0].dim_param == "batch" and (series[1].dim_value, series[2].dim_value) == (56, 1)
    forecast = graph.output[0].type.tensor_type.shape.dim
    assert forecast[0].dim_param == "batch" and forecast[1].dim_value == 7


def test_export_stores_the_eval_set(exported_run):
    """eval.npz: the test split's inputs and labels, TensorFlow's outputs on them, and who it belongs to."""
    from tensorflow import keras

    from rnnforge.export.eval_set import load_eval_set

    eval_set = load_eval_set(exported_run / "eval.npz", "sketch")
    x, y, reference, meta = eval_set.x, eval_set.y, eval_set.reference, eval_set.meta
    assert x.dtype == np.float32 and x.shape == (1000, 100, 3) and y.shape == (1000,) and reference.shape == (1000, 10)
    assert meta["task"] == "sketch" and meta["split"] == "test" and meta["examples_in_split"] == 1000
    assert meta["source_run"] == str(exported_run.resolve()) and meta["selection"] == "all"
    assert meta["info"]["class_names"][:3] == ["circle", "square", "triangle"] and "tensorflow" in meta["versions"]
    model = keras.models.load_model(exported_run / "model.keras", compile=False)
    np.testing.assert_allclose(reference[:64], model(x[:64], training=False).numpy(), atol=1e-6)
    metrics = json.loads((exported_run / "metrics.json").read_text())
    assert np.mean(reference.argmax(-1) == y) == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    parity = json.loads((exported_run / "parity.json").read_text())
    assert (
        parity["eval_set"]["examples"] == 1000
        and parity["eval_set"]["bytes"] == (exported_run / "eval.npz").stat().st_size
    )


@pytest.mark.slow
def test_eval_examples_caps_the_stored_split_and_reads_the_data_once(exported_run, tmp_path, monkeypatch):
    """--eval-examples keeps an evenly spaced subset; export reads the dataset once, for it and parity."""
    import shutil

    from rnnforge.core.arrays import select
    from rnnforge.export.eval_set import load_eval_set
    from rnnforge.export.onnx_export import export_onnx
    from rnnforge.models.spec import TaskSpec

    run = shutil.copytree(exported_run, tmp_path / "run", ignore=shutil.ignore_patterns("bench", "_ckpt"))
    loads = []
    original = TaskSpec.load_data
    monkeypatch.setattr(TaskSpec, "load_data", lambda spec, config: loads.append(spec.name) or original(spec, config))
    parity = export_onnx(run, eval_examples=300)
    assert loads == ["sketch"]
    capped = load_eval_set(run / "eval.npz", "sketch")
    full = load_eval_set(exported_run / "eval.npz", "sketch")
    keep = select(1000, 300)
    assert len(keep) == 300 and keep[0] == 0 and keep[-1] == 999 and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(capped.x, full.x[keep])
    np.testing.assert_array_equal(capped.y, full.y[keep])
    assert capped.meta["selection"] == "300 evenly spaced" and capped.meta["examples_in_split"] == 1000
    assert parity["eval_set"]["examples"] == 300 and parity["batch"] == 256
    assert "--eval-examples" in error_line(run_cli("export", "onnx", run, "--eval-examples", "0"))


def test_the_default_cap_keeps_eval_npz_small():
    """3,838 examples (enough to establish 99.9 % agreement), or fewer when their inputs pass 64 MiB
    (uint8 video clips are 192 KiB each)."""
    from rnnforge.export.eval_set import default_cap

    assert default_cap(np.zeros((1000, 100, 3), np.float32)) == 3838  # sketch: 1.2 kB per drawing
    assert default_cap(np.zeros((2, 16, 64, 64, 3), np.uint8)) == 341  # video: 64 MiB / 192 KiB
    assert default_cap(np.zeros((2, 8, 32, 32, 3), np.uint8)) == 2730  # 24 KiB each
    assert default_cap(np.zeros((1, 4096, 4096, 4), np.float32)) == 1  # never none
