"""Agreement gates judged on their 95 % Wilson lower bound (issue #28, item 4): a count that clears
the threshold on its point figure but not on its bound fails; the default number of examples can
establish the strictest default threshold; the int8 gate's held-out examples; which layers the
int8 recipes leave in fp32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnforge.core.stats import describe_rate, examples_needed, rate_gate, wilson_lower
from rnnforge.export.eval_set import default_cap
from rnnforge.export.int8 import fp32_nodes, held_out_batches, layer_nodes, quantize
from rnnforge.export.parity import top1_record
from rnnforge.export.results import agreement_threshold, score_engines
from rnnforge.export.settings import AGREEMENT_THRESHOLDS, DEFAULT_EVAL_BYTES, DEFAULT_EVAL_EXAMPLES
from rnnforge.models import get_spec
from rnnforge.models.spec import Int8Spec, TaskData


def _labels_to_scores(labels: np.ndarray, classes: int = 4) -> np.ndarray:
    out = np.full((len(labels), classes), 0.1 / (classes - 1), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 0.9
    return out


# --- the gate on a rate --------------------------------------------------------------------------


def test_a_rate_passes_on_its_lower_bound_not_its_point_figure():
    """240 of 240 is 100 % but bounds agreement at 98.4 %: not established against 99 %; 3,838 of
    3,838 reach 99.9 %; 995 of 1,000 (99.5 %) clears 99 % on the point figure, misses on the bound."""
    gate = rate_gate(240, 240, 0.99)
    assert gate["rate"] == 1.0 and gate["lower_bound"] == pytest.approx(0.9842, abs=1e-4)
    assert not gate["passed"] and gate["verdict"] == "not established" and gate["needed"] == 381
    assert rate_gate(381, 381, 0.99)["passed"] and not rate_gate(380, 380, 0.99)["passed"]
    assert rate_gate(3838, 3838, 0.999)["passed"] and not rate_gate(3837, 3837, 0.999)["passed"]
    point_only = rate_gate(995, 1000, 0.99)
    assert point_only["rate"] >= 0.99 > point_only["lower_bound"] and not point_only["passed"]
    assert rate_gate(997, 1000, 0.99)["passed"]  # lower bound 0.9912
    missed = rate_gate(950, 1000, 0.99)
    assert missed["verdict"] == "missed" and not missed["passed"] and "needed" not in missed


def test_not_established_says_how_many_examples_would_settle_it():
    gate = rate_gate(239, 240, 0.99)  # 99.6 %: one disagreement
    assert gate["verdict"] == "not established"
    n = gate["needed"]
    assert wilson_lower(round(gate["rate"] * n), n) >= 0.99 > wilson_lower(round(gate["rate"] * (n - 1)), n - 1)
    text = describe_rate(gate)
    assert text.startswith("0.9958 (239 of 240; 95 % lower bound 0.9768, at least 0.99)")
    assert f"not established on 240 examples ({n:,} needed at this rate)" in text
    assert describe_rate(rate_gate(997, 1000, 0.99)).endswith(": met")


def test_bench_and_parity_records_carry_the_bound():
    reference = _labels_to_scores(np.arange(400) % 4)
    pred = reference.copy()
    pred[0] = pred[0, ::-1]  # one disagreement
    record = top1_record(pred, reference, 0.99)
    assert (record["top1_agreed"], record["top1_examples"]) == (399, 400)
    assert record["top1_lower_bound"] == pytest.approx(wilson_lower(399, 400))
    assert record["top1_gate"]["verdict"] == "not established"  # 99.75 %, bound 98.6 %
    spec = get_spec("sketch")
    y = np.arange(400) % 4
    scores = score_engines({"onnxruntime": pred, "onnxruntime_int8": reference}, reference, spec, None, y, {})
    fp32, int8 = (scores["agreement_by_engine"][e] for e in ("onnxruntime", "onnxruntime_int8"))
    assert fp32["top1_gate"]["threshold"] == 0.999 and not fp32["top1_gate"]["passed"]
    assert int8["top1_gate"]["threshold"] == 0.99 and int8["top1_gate"]["passed"]  # 400 of 400: bound 0.9905
    assert agreement_threshold("onnxruntime_fp16", spec) == 0.99


# --- how many examples ---------------------------------------------------------------------------


def test_the_default_eval_examples_can_establish_the_strictest_default_threshold():
    strictest = max(AGREEMENT_THRESHOLDS.values())
    assert strictest == 0.999 and DEFAULT_EVAL_EXAMPLES == examples_needed(strictest) == 3838
    assert rate_gate(DEFAULT_EVAL_EXAMPLES, DEFAULT_EVAL_EXAMPLES, strictest)["passed"]
    assert examples_needed(get_spec("video").onnx.int8.min_top1_agreement) <= DEFAULT_EVAL_EXAMPLES
    sketch = np.zeros((5000, 100, 3), dtype=np.float32)  # 1,200 bytes each: all 3,838 fit in 64 MiB
    assert default_cap(sketch) == 3838
    clips = np.zeros((2, 16, 64, 64, 3), dtype=np.uint8)  # 192 KiB each: 341 fit, bounding at most 98.9 %
    assert default_cap(clips) == DEFAULT_EVAL_BYTES // (16 * 64 * 64 * 3) == 341
    assert wilson_lower(341, 341) < 0.99


def test_held_out_batches_take_the_evaluation_split_then_valid_then_fresh_draws():
    drawn = []

    def draw(n, index):
        drawn.append((n, index))
        return np.full((n, 2), 100 + index, dtype=np.float32), np.zeros(n, dtype=np.int64)

    splits = {
        "train": (np.full((50, 2), -1, dtype=np.float32), np.zeros(50)),
        "valid": (np.full((30, 2), 2, dtype=np.float32), np.zeros(30)),
        "test": (np.full((40, 2), 3, dtype=np.float32), np.zeros(40)),
    }
    data = TaskData(splits, draw_held_out=draw)
    batches = list(held_out_batches(data, calibrated="train", target=150, batch=16))
    sources = [source for _, _, source in batches]
    assert sources == ["test"] * 3 + ["valid"] * 2 + ["drawn"] * 5
    x = np.concatenate([b[0] for b in batches])
    assert len(x) == 150 and not (x == -1).any()  # never a training example
    assert drawn == [(16, 0), (16, 1), (16, 2), (16, 3), (16, 4)]
    # valid calibrated: skipped; without draws: fewer than asked
    data = TaskData(splits)
    batches = list(held_out_batches(data, calibrated="valid", target=150, batch=64))
    assert [s for _, _, s in batches] == ["test"] and sum(len(b[1]) for b in batches) == 40
    # fewer asked than the split holds: evenly spaced
    x = np.arange(40, dtype=np.float32)[:, None]
    data = TaskData({**splits, "test": (x, np.zeros(40))})
    (only,) = list(held_out_batches(data, calibrated=None, target=4, batch=64))
    assert only[0][:, 0].tolist() == [0.0, 13.0, 26.0, 39.0]


# --- which layers stay fp32 ----------------------------------------------------------------------


def _conv_mlp() -> onnx.ModelProto:
    """float [n, 3, 8, 8] -> Conv -> Relu -> Conv -> Relu -> Flatten -> MatMul -> [n, 4]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(8 * 4 * 4, 4)).astype(np.float32) * 0.1, "w3"),
        numpy_helper.from_array(np.zeros(4, dtype=np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w3"], ["m"], name="dense"),
        helper.make_node("Add", ["m", "b3"], ["y"], name="dense_bias"),  # ORT's pre-processing fuses the two
    ]
    graph = helper.make_graph(
        nodes,
        "conv_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_layer_positions_name_the_first_and_last_layer_nodes():
    model = _conv_mlp()
    assert layer_nodes(model, ("first",)) == ["conv1"]
    assert layer_nodes(model, ("first", "last")) == ["conv1", "dense"]
    assert layer_nodes(model, ("last", "first", "last")) == ["conv1", "dense"]
    assert layer_nodes(model, ()) == []
    with pytest.raises(ValueError, match="unknown position 'middle'"):
        layer_nodes(model, ("middle",))


@pytest.mark.parametrize(
    ("fp32_layers", "calibration", "kept"),
    [((), "minmax", []), (("first",), "percentile", ["Conv"]), (("first", "last"), "minmax", ["Conv", "MatMul"])],
)
def test_the_recipe_leaves_its_fp32_layers_unquantized(fp32_layers, calibration, kept):
    model = _conv_mlp()
    recipe = Int8Spec(
        static_ops=("Conv", "Relu"), dynamic_ops=("MatMul",), fp32_layers=fp32_layers, calibration=calibration
    )
    x = np.random.default_rng(1).normal(size=(64, 3, 8, 8)).astype(np.float32)
    quantized = quantize(model, recipe, x)
    op_of = {n.name: n.op_type for n in quantized.graph.node}
    assert [op_of[name] for name in fp32_nodes(quantized)] == kept
    ops = list(op_of.values())
    assert "DequantizeLinear" in ops and ops.count("Conv") == 2  # QDQ (or fp32) convolutions
    quantized_dense = any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in ops)
    assert quantized_dense is (len(kept) < 2)


def test_the_gpu_goal_on_agreement_is_met_only_on_its_bound():
    import importlib.util

    from conftest import ROOT

    loader = importlib.util.spec_from_file_location("gpu_bench_for_gates", ROOT / "benchmarks" / "gpu_bench.py")
    gpu_bench = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(gpu_bench)

    def src(agreed: int, examples: int) -> dict:
        engine = {"top1_agreement": agreed / examples, "top1_agreed": agreed, "max_abs_diff": 1e-6}
        accuracy = {"examples": examples, "agreement_by_engine": {"onnxruntime": engine}}
        return {"cuda": {"run": {"accuracy": accuracy}}}

    (row,) = gpu_bench.goal_agreement("run", "sketch", src(240, 240))  # 100 %, bound 98.4 %: goal 99.9 %
    assert row[2] == "not established" and "lower bound 98.42%" in row[1]
    (row,) = gpu_bench.goal_agreement("run", "sketch", src(3838, 3838))
    assert row[2] == "met"
    (row,) = gpu_bench.goal_agreement("run", "sketch", src(3800, 3838))
    assert row[2] == "**missed**"
