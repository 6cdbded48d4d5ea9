"""The int8 variant of an exported model: ``onnxruntime.quantization``, gated on task accuracy.

Each task spec declares its recipe (``OnnxSpec.int8``, chosen from measurements, see
``docs/performance.md``): the op types quantized *statically* (QDQ: activations get a fixed scale
from calibration inputs, weights per channel; it pays for convolution front ends) and those
quantized *dynamically* (weights int8, activations' scale computed per call; it pays for LSTM,
GRU, MatMul and Gemm, whose activations have no stable range). ``quantize`` runs ORT's
pre-processing (``quant_pre_process``: shape inference and graph optimisation), then the static
pass over the calibration inputs, then the dynamic pass.

The gate is the task's accuracy on held-out examples, not an elementwise tolerance (int8 moves
probabilities by more than ``atol`` while keeping the decisions): a classifier keeps top-1
agreement with TensorFlow of at least ``min_top1_agreement``, *established*: its 95 % Wilson lower
bound must reach it (``core.stats.rate_gate``), so the examples must be enough to show it (381
with no disagreement for 99 %); and its accuracy within ``max_accuracy_drop``. A classifier is
judged on ``--eval-examples`` held-out examples (``held_out_batches``: the evaluation split, the
other held-out split unless it calibrated, then fresh draws of a generated dataset), streamed in
batches, so the video task's 3,838 clips never sit in memory at once. The forecaster's mean MAE
stays within ``max_mae_increase`` (relative) of the fp32 ONNX model's on the stored evaluation set.

    record = export_int8(onnx_model, spec, eval_set, data, Path("runs/video/model.int8.onnx"))
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from rnnforge.core import fileio
from rnnforge.core.arrays import Inputs, count, example_bytes, feeds, rows, select
from rnnforge.core.errors import UserError
from rnnforge.core.progress import Progress
from rnnforge.core.stats import describe_rate, rate_gate
from rnnforge.export.parity import enforce_gate

#: Calibration inputs fed per call to ORT's calibrator.
CALIBRATION_BATCH = 32
#: How many training (else validation) examples calibrate the statically quantized ops: at most
#: ``CALIBRATION_EXAMPLES``, and at most ``CALIBRATION_BYTES`` of inputs (ORT's MinMax calibrator
#: holds every intermediate tensor of every example until the end: ~20x the input for the video
#: model, whose 16 MiB are 85 clips).
CALIBRATION_EXAMPLES = 256
CALIBRATION_BYTES = 16 * 2**20


#: Held-out examples run per batch by the classifier's gate (TensorFlow, fp32 and int8 ONNX).
GATE_BATCH = 256


def export_int8(onnx_model, spec, eval_set, data, output: Path, tf_predict=None, examples: int | None = None) -> dict:
    """Quantize ``onnx_model`` by ``spec.onnx.int8``, calibrating on ``data``'s training (else
    validation) inputs; gate it and write it to ``output``; the record.

    A classifier is gated on ``examples`` held-out examples (``held_out_batches``; ``None``: as many
    as ``eval_set`` holds), ``tf_predict(x)`` giving TensorFlow's outputs on each batch (``None``:
    the stored evaluation set and its reference only); the forecaster on ``eval_set``.
    A variant that fails its gate raises ``ParityError`` (exit 3) and nothing is written.
    """
    recipe = spec.onnx.int8
    calibration_x, calibration = calibration_set(data, recipe)
    quantized = quantize(onnx_model, recipe, calibration_x)
    print(
        f"int8 variant (static {', '.join(recipe.static_ops) or 'none'}; "
        f"dynamic {', '.join(recipe.dynamic_ops) or 'none'}{fp32_note(quantized)}; {calibration['note']}):",
        flush=True,
    )
    if spec.kind == "classification" and tf_predict is not None:
        target = count(eval_set.x) if examples is None else examples
        y, reference, fp32_pred, int8_pred, sources = _held_out_predictions(
            onnx_model, quantized, data, calibration["split"], target, tf_predict
        )
        x = None  # classification scores read labels and outputs only
    else:
        x, y, reference = eval_set.x, eval_set.y, eval_set.reference
        fp32_pred, int8_pred = run_model(onnx_model, x), run_model(quantized, x)
        sources = {eval_set.split: count(x)}
    record = accuracy_gate(spec, recipe, x, y, reference, fp32_pred, int8_pred, eval_set.info)
    where = " + ".join(f"{n:,} {source}" for source, n in sources.items())
    failure = f"the int8 variant fails its accuracy gate on {where} examples"
    enforce_gate(record, failure, "nothing written")
    record.update(
        {
            "split": eval_set.split,
            "held_out": sources,
            "recipe": {
                "static_ops": list(recipe.static_ops),
                "dynamic_ops": list(recipe.dynamic_ops),
                "fp32_layers": list(recipe.fp32_layers),
                "calibration": recipe.calibration if recipe.static_ops else None,
                "fp32_nodes": fp32_nodes(quantized),
            },
            "gate": {
                "min_top1_agreement": recipe.min_top1_agreement,
                "max_accuracy_drop": recipe.max_accuracy_drop,
            }
            if spec.kind == "classification"
            else {"max_mae_increase": recipe.max_mae_increase},
            "calibration": calibration,
            "quantized_ops": quantized_ops(quantized),
            "onnx_path": str(output),
            "nodes": len(quantized.graph.node),
        }
    )
    fileio.write_bytes(output, quantized.SerializeToString())
    return record


def held_out_batches(data, calibrated: str | None, target: int, batch: int = GATE_BATCH):
    """Up to ``target`` held-out examples of ``data`` as ``(x, y, source)`` batches: the evaluation
    split (evenly spaced where it holds more), the other held-out split unless it is ``calibrated``
    (the calibration split's name), then ``data.draw_held_out``'s fresh examples (``source``
    "drawn"). Never a training example; fewer than ``target`` where the dataset has no more."""
    first = data.evaluation_split()
    splits = [first, *(["valid"] if first == "test" and calibrated != "valid" and "valid" in data.splits else [])]
    left = target
    for split in splits:
        x_all, y_all = data.splits[split]
        keep = select(count(x_all), min(left, count(x_all)))
        for i in range(0, len(keep), batch):
            part = keep[i : i + batch]
            yield rows(x_all, part), np.asarray(y_all)[part], split
        left -= len(keep)
    index = 0
    while left > 0 and data.draw_held_out is not None:
        x, y = data.draw_held_out(min(batch, left), index)
        if not count(x):
            return
        yield x, np.asarray(y), "drawn"
        left -= count(x)
        index += 1


def _held_out_predictions(onnx_model, quantized, data, calibrated, target: int, tf_predict):
    """Labels, TensorFlow's, the fp32 and the int8 model's outputs on ``held_out_batches``, and the
    examples taken from each source."""
    fp32_session, int8_session = session(onnx_model), session(quantized)
    parts: dict[str, list] = {"y": [], "tf": [], "fp32": [], "int8": []}
    sources: dict[str, int] = {}
    for x, y, source in held_out_batches(data, calibrated, target):
        parts["y"].append(y)
        parts["tf"].append(np.asarray(tf_predict(x)))
        parts["fp32"].append(run_model(fp32_session, x))
        parts["int8"].append(run_model(int8_session, x))
        sources[source] = sources.get(source, 0) + count(x)
    if not sources:
        raise UserError("--int8: the dataset has no held-out examples to judge the int8 variant on")
    y, reference, fp32_pred, int8_pred = (np.concatenate(parts[k]) for k in ("y", "tf", "fp32", "int8"))
    print(f"int8 gate: {len(y):,} held-out examples ({', '.join(f'{n:,} {s}' for s, n in sources.items())})")
    return y, reference, fp32_pred, int8_pred, sources


def calibration_set(data, recipe, cap: int = CALIBRATION_EXAMPLES) -> tuple[Inputs | None, dict]:
    """At most ``cap`` evenly spaced inputs of ``data``'s training split (validation when training
    streams or is empty) and their record; ``(None, record)`` when ``recipe`` has no static ops."""
    if not recipe.static_ops:
        return None, {"split": None, "examples": 0, "note": "no calibration: dynamic quantization only"}
    in_memory = data.train_stream is None and "train" in data.splits and count(data.splits["train"][0])
    split = "train" if in_memory else "valid"
    x_all = data.splits[split][0] if split in data.splits else np.empty((0,))
    if not count(x_all):
        raise UserError(
            f"--int8: this task quantizes {', '.join(recipe.static_ops)} statically, which needs training or "
            "validation inputs to calibrate on, and the dataset has none"
        )
    n_all = count(x_all)
    budget = getattr(recipe, "calibration_bytes", CALIBRATION_BYTES)
    keep = select(n_all, max(1, min(cap, budget // example_bytes(x_all))))
    note = f"calibrated on {len(keep)} of {n_all} {split} examples"
    record = {"split": split, "examples": int(len(keep)), "examples_in_split": int(n_all), "note": note}
    return rows(x_all, keep), record


def even_batch(n: int, most: int = CALIBRATION_BATCH) -> int:
    """The largest batch of at most ``most`` that divides ``n``: ORT's histogram calibrators
    (percentile, entropy) stack every batch's outputs, which needs batches of one size."""
    return max(d for d in range(1, min(most, n) + 1) if n % d == 0)


class _Batches:
    """``onnxruntime.quantization.CalibrationDataReader`` over ``x`` in batches; shows how far the
    calibration is on a long one."""

    def __init__(self, input_names: list[str], x: Inputs, batch: int = CALIBRATION_BATCH):
        self.feeds = iter([feeds(rows(x, slice(i, i + batch)), input_names) for i in range(0, count(x), batch)])
        self.batch, self.given = batch, 0
        self.progress = Progress("int8 calibration", count(x))

    def get_next(self):
        if self.given:
            self.progress.update(min(self.given, self.progress.total))
        nxt = next(self.feeds, None)
        if nxt is None:
            self.progress.finish()
        else:
            self.given += count(next(iter(nxt.values())))
        return nxt


def quantize(onnx_model, recipe, calibration_x: Inputs | None):
    """An int8 copy of ``onnx_model`` (a ModelProto) following ``recipe`` (``Int8Spec``).

    ``calibration_x`` (the model's input, e.g. float32 ``[n, time, 3]``) sets the activation
    ranges of the statically quantized ops; it may be ``None`` when ``recipe.static_ops`` is empty.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "check if the model is already quantized": it is, by our static pass
    try:
        return _quantize(onnx_model, recipe, calibration_x)
    finally:
        logging.disable(previous)


def _quantize(onnx_model, recipe, calibration_x: Inputs | None):
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="rnnforge-int8-") as work:
        work = Path(work)
        fp32, current = work / "fp32.onnx", work / "pre.onnx"
        onnx.save(onnx_model, str(fp32))
        print("int8 variant: pre-processing (shape inference, graph optimisation)", flush=True)
        quant_pre_process(str(fp32), str(current), skip_symbolic_shape=True)
        excluded = layer_nodes(onnx.load(str(current)), recipe.fp32_layers)  # the static pass renames some
        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[recipe.calibration]
        calibration_options = (
            {"CalibPercentile": recipe.calibration_percentile} if recipe.calibration == "percentile" else {}
        )
        if recipe.static_ops:
            if calibration_x is None or not count(calibration_x):
                raise ValueError("static int8 quantization needs calibration inputs")
            print(
                f"int8 variant: calibrating {', '.join(recipe.static_ops)} on {count(calibration_x)} examples",
                flush=True,
            )
            static = work / "static.onnx"
            quantize_static(
                str(current),
                str(static),
                _Batches([i.name for i in onnx_model.graph.input], calibration_x, even_batch(count(calibration_x))),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(recipe.static_ops),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=method,
                extra_options=calibration_options,
            )
            current = static
        if recipe.dynamic_ops:
            print(f"int8 variant: quantizing {', '.join(recipe.dynamic_ops)} dynamically", flush=True)
            dynamic = work / "dynamic.onnx"
            quantize_dynamic(
                str(current),
                str(dynamic),
                op_types_to_quantize=list(recipe.dynamic_ops),
                weight_type=QuantType.QInt8,
                nodes_to_exclude=layer_nodes(
                    onnx.load(str(current)), recipe.fp32_layers
                ),  # names after the static pass
            )
            current = dynamic
        quantized = onnx.load(str(current))
    skip_requantized_uint8(quantized)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(onnx_model.metadata_props)
    return quantized


#: The op types that make a model's layers: ``Int8Spec.fp32_layers`` counts positions among them.
LAYER_OPS = ("Conv", "MatMul", "Gemm", "LSTM", "GRU")


def layer_nodes(onnx_model, positions) -> list[str]:
    """The names of the nodes at ``positions`` ("first", "last") among ``onnx_model``'s layer
    nodes (``LAYER_OPS``, in graph order): those ``Int8Spec.fp32_layers`` leaves in fp32."""
    layers = [node.name for node in onnx_model.graph.node if node.op_type in LAYER_OPS]
    unknown = [p for p in positions if p not in ("first", "last")]
    if unknown:
        raise ValueError(f"fp32_layers: unknown position {unknown[0]!r} (expected first or last)")
    if not layers:
        return []
    chosen = sorted({layers[0] if p == "first" else layers[-1] for p in positions}, key=layers.index)
    # ORT's quantizers replace a Gemm by MatMul + Add before quantizing, the MatMul named NAME_MatMul
    gemms = {node.name for node in onnx_model.graph.node if node.op_type == "Gemm"}
    return chosen + [f"{name}_MatMul" for name in chosen if name in gemms]


def fp32_nodes(onnx_model) -> list[str]:
    """The layer nodes (``LAYER_OPS``) of a quantized model that still compute in fp32: neither an
    int8 op nor fed by a ``DequantizeLinear`` (QDQ)."""
    dequantized = {node.output[0] for node in onnx_model.graph.node if node.op_type == "DequantizeLinear"}
    return [
        node.name
        for node in onnx_model.graph.node
        if node.op_type in LAYER_OPS and not any(name in dequantized for name in node.input)
    ]


def fp32_note(onnx_model) -> str:
    """ ", 1 layer kept in fp32 (Conv)" for the ``int8 variant`` line; empty when none is."""
    kept = [node.op_type for node in onnx_model.graph.node if node.name in set(fp32_nodes(onnx_model))]
    return f"; {len(kept)} layer{'s' if len(kept) != 1 else ''} kept in fp32 ({', '.join(kept)})" if kept else ""


def skip_requantized_uint8(onnx_model) -> int:
    """Drop ``Cast(uint8 -> float) -> QuantizeLinear(scale 1, zero point 0, uint8)`` pairs, which
    give back their input unchanged (the video model's frames: calibration sees 0-255, so the first
    convolution's input scale is exactly 1); the quantized op then reads the uint8 tensor itself,
    saving two passes over the frames. Returns how many were dropped."""
    from onnx import TensorProto, numpy_helper

    init = {i.name: i for i in onnx_model.graph.initializer}
    uint8 = {
        v.name
        for v in (*onnx_model.graph.input, *onnx_model.graph.value_info)
        if v.type.tensor_type.elem_type == TensorProto.UINT8
    }
    producer = {out: node for node in onnx_model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in onnx_model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dropped = []
    for node in onnx_model.graph.node:
        cast = producer.get(node.input[0]) if node.op_type == "QuantizeLinear" and len(node.input) == 3 else None
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in uint8:
            continue
        scale, zero = (init.get(name) for name in node.input[1:])
        if scale is None or zero is None or zero.data_type != TensorProto.UINT8:
            continue
        if numpy_helper.to_array(scale).tolist() != 1.0 or numpy_helper.to_array(zero).tolist() != 0:
            continue
        for consumer in consumers.get(node.output[0], []):
            consumer.input[:] = [cast.input[0] if name == node.output[0] else name for name in consumer.input]
        dropped.append(node)
        if len(consumers.get(cast.output[0], [])) == 1:
            dropped.append(cast)
    for node in dropped:
        onnx_model.graph.node.remove(node)
    return sum(1 for node in dropped if node.op_type == "QuantizeLinear")


def quantized_ops(onnx_model) -> dict[str, int]:
    """Count of the int8 op types in ``onnx_model`` (``DynamicQuantizeLSTM``, ``QuantizeLinear``, ...)."""
    counts: dict[str, int] = {}
    for node in onnx_model.graph.node:
        if "Quant" in node.op_type or "Integer" in node.op_type:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def accuracy_gate(spec, recipe, x, y, reference, fp32_pred, int8_pred, info: dict) -> dict:
    """The int8 gate on the evaluation split: the record, with ``passed``, ``checks`` and ``failures``.

    ``reference`` is TensorFlow's output on ``x``, ``fp32_pred`` the fp32 ONNX model's, ``int8_pred``
    the int8 model's; scores come from ``spec.score``.
    """
    tf_scores = spec.score(x, y, reference, info)
    fp32_scores = spec.score(x, y, fp32_pred, info)
    int8_scores = spec.score(x, y, int8_pred, info)
    checks = []
    n = int(len(y))
    if spec.kind == "classification":
        agreed = int(np.sum(int8_pred.argmax(-1) == reference.argmax(-1)))
        gate = rate_gate(agreed, n, recipe.min_top1_agreement)
        drop = tf_scores["accuracy"] - int8_scores["accuracy"]
        checks.append(("top-1 agreement with TensorFlow", gate["passed"], describe_rate(gate)))
        checks.append(
            (
                "accuracy",
                drop <= recipe.max_accuracy_drop + 1e-12,
                f"{int8_scores['accuracy']:.4f} vs TensorFlow {tf_scores['accuracy']:.4f} on {n:,} examples "
                f"(drop at most {recipe.max_accuracy_drop * 100:g} points)",
            )
        )
        record = {
            "top1_agreement": gate["rate"],
            "top1_agreed": agreed,
            "top1_lower_bound": gate["lower_bound"],
            "top1_gate": gate,
            "accuracy_drop": drop,
        }
    else:
        change = int8_scores["mae"] / max(fp32_scores["mae"], 1e-12) - 1
        checks.append(
            (
                "mean MAE",
                change <= recipe.max_mae_increase + 1e-12,
                f"{int8_scores['mae']:.4g} vs fp32 {fp32_scores['mae']:.4g} on {n:,} examples "
                f"({change * 100:+.2f} %, at most +{recipe.max_mae_increase * 100:g} %)",
            )
        )
        record = {"mae_change": change}
    return {
        **record,
        "examples": n,
        "max_abs_diff": float(np.max(np.abs(int8_pred.astype(np.float64) - reference))) if reference.size else 0.0,
        "scores": {"tensorflow": tf_scores, "fp32": fp32_scores, "int8": int8_scores},
        "checks": [f"  -[{'✓' if ok else 'x'}] {name}: {detail}" for name, ok, detail in checks],
        "failures": [f"{name}: {detail}" for name, ok, detail in checks if not ok],
        "passed": all(ok for _, ok, _ in checks),
    }


def session(onnx_model):
    """An ONNX Runtime CPU session of ``onnx_model`` (a ModelProto)."""
    import onnxruntime as ort

    return ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_model(onnx_model, x: Inputs, batch: int = 256) -> np.ndarray:
    """The first output of ``onnx_model`` (a ModelProto, or a ``session`` of one) on ``x`` (ONNX
    Runtime, CPU), in batches of ``batch``."""
    runner = onnx_model if hasattr(onnx_model, "get_inputs") else session(onnx_model)
    names = [i.name for i in runner.get_inputs()]
    return np.concatenate(
        [runner.run(None, feeds(rows(x, slice(i, i + batch)), names))[0] for i in range(0, count(x), batch)]
    )
