"""The fp16 variant of an exported model: ``onnxconverter-common`` float16 with ``keep_io_types``.

Plain conversion breaks two kinds of graph: tensors outside half precision's range (the
forecaster takes and returns raw riders, ~1e5-1e6, beyond fp16's 65,504) and ``Cast`` nodes
from integer inputs (the video model's uint8 frames), whose target type the converter leaves at
float32. ``convert_to_fp16`` runs the fp32 model once on real inputs, records every
intermediate tensor's largest magnitude, and keeps in fp32 the nodes that touch a tensor beyond
``SAFE_ABS`` and every ``Cast``; the rest runs in fp16.
"""

from __future__ import annotations

import numpy as np

#: Largest magnitude a tensor may reach and still be converted (fp16 max 65,504; 1e4 leaves
#: room for activations beyond the sample's and keeps ~3 significant digits meaningful).
SAFE_ABS = 1e4


def tensor_ranges(onnx_model, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute value of every float tensor (inputs, intermediates, outputs) on ``feeds``."""
    import onnx
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(onnx_model)
    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    known = {o.name for o in probe.graph.output}
    for value in inferred.graph.value_info:
        if value.name not in known and value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            probe.graph.output.append(value)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ranges = {
        name: float(np.max(np.abs(value))) if value.size else 0.0
        for name, value in zip(names, session.run(names, feeds))
        if np.issubdtype(value.dtype, np.floating)
    }
    for name, value in feeds.items():
        if np.issubdtype(value.dtype, np.floating):
            ranges[name] = float(np.max(np.abs(value))) if value.size else 0.0
    return ranges


def nodes_kept_in_fp32(onnx_model, ranges: dict[str, float], safe_abs: float = SAFE_ABS) -> list[str]:
    """Names of the nodes that must stay fp32: every ``Cast``, and any node touching a tensor
    whose magnitude exceeds ``safe_abs``."""
    keep = []
    for node in onnx_model.graph.node:
        touched = [ranges.get(name, 0.0) for name in (*node.input, *node.output) if name]
        if node.op_type == "Cast" or (touched and max(touched) > safe_abs):
            keep.append(node.name)
    return keep


def convert_to_fp16(onnx_model, feeds: dict[str, np.ndarray], safe_abs: float = SAFE_ABS):
    """An fp16 copy of ``onnx_model`` with fp32 inputs/outputs; ranges measured on ``feeds``.

    Returns ``(model, kept)``: the converted ModelProto and the nodes kept in fp32.
    """
    from onnxconverter_common import float16

    kept = nodes_kept_in_fp32(onnx_model, tensor_ranges(onnx_model, feeds), safe_abs)
    converted = float16.convert_float_to_float16(
        onnx_model, keep_io_types=True, node_block_list=kept, disable_shape_infer=False
    )
    _restore_output_types(converted, onnx_model)
    return converted, kept


def _restore_output_types(converted, original) -> None:
    """When a kept (fp32) node produces a graph output, onnxconverter-common 1.16 declares that
    output fp16 despite ``keep_io_types`` and ends it with a Cast to fp16: undo both."""
    declared = {o.name: o.type.tensor_type.elem_type for o in original.graph.output}
    for output in converted.graph.output:
        output.type.tensor_type.elem_type = declared[output.name]
    for node in converted.graph.node:
        if node.op_type == "Cast" and node.output[0] in declared:
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = declared[node.output[0]]
