"""Graph rewrites that tf2onnx leaves undone, applied to the exported ONNX graph before parity.

The video model reads uint8 frames, scales them to [0, 1] and reshapes them per frame
(``TimeDistributed``); tf2onnx emits ``Cast -> Mul -> Add(0) -> Reshape -> Transpose(NHWC->NCHW)
-> Conv``, so the two layout ops and the scaling each pass over the float32 frames (4x the bytes
of the uint8 input). ``optimise`` moves layout ops ahead of element-wise scalar ops (they commute)
and folds a scalar scale into the convolution that follows it: ``Reshape -> Transpose`` on uint8,
one ``Cast``, and a Conv with scaled weights. Every Keras recurrent layer also gets a chain of
8 small nodes (Shape, Gather, Cast, Slice, Concat, Cast, Expand, Unsqueeze) that builds its zero
initial state, which ONNX ``LSTM``/``GRU`` assume anyway: the inputs are dropped and the dead
nodes removed, which matters at batch 1 where per-node overhead dominates. Parity is checked on
the rewritten graph.
"""

from __future__ import annotations

import numpy as np

LAYOUT_OPS = ("Transpose", "Reshape")
SCALAR_OPS = ("Cast", "Mul", "Add", "Sub", "Div")


def optimise(model) -> dict[str, int]:
    """Rewrite ``model`` (an ONNX ModelProto) in place; returns how often each rewrite applied."""
    counts = {
        "layout_ops_hoisted": 0,
        "scales_folded_into_conv": 0,
        "zero_adds_removed": 0,
        "zero_initial_states_dropped": 0,
    }
    changed = True
    while changed:
        changed = False
        for rewrite, key in (
            (_remove_zero_add, "zero_adds_removed"),
            (_hoist_layout_op, "layout_ops_hoisted"),
            (_fold_scale_into_conv, "scales_folded_into_conv"),
            (_drop_zero_initial_state, "zero_initial_states_dropped"),
        ):
            if rewrite(model):
                counts[key] += 1
                changed = True
                break
    _remove_dead_nodes(model.graph)
    used = {name for node in model.graph.node for name in node.input}
    for initializer in list(model.graph.initializer):
        if initializer.name not in used:
            model.graph.initializer.remove(initializer)
    return counts


def _graph_maps(graph):
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    initializers = {i.name: i for i in graph.initializer}
    return producers, consumers, outputs, initializers


def _scalar(initializers, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    if name not in initializers:
        return None
    value = numpy_helper.to_array(initializers[name])
    return value if value.size == 1 else None


def _only_consumer(node, consumers, outputs) -> bool:
    return node.output[0] not in outputs and len(consumers.get(node.output[0], [])) == 1


def _remove_zero_add(model) -> bool:
    """``y = x + 0`` (or ``x - 0``): consumers read ``x``."""
    graph = model.graph
    producers, consumers, outputs, initializers = _graph_maps(graph)
    for node in graph.node:
        if node.op_type in ("Add", "Sub") and node.output[0] not in outputs:
            scalar = _scalar(initializers, node.input[1])
            if scalar is not None and float(scalar.reshape(())) == 0.0:
                for consumer in consumers.get(node.output[0], []):
                    for i, name in enumerate(consumer.input):
                        if name == node.output[0]:
                            consumer.input[i] = node.input[0]
                graph.node.remove(node)
                return True
    return False


def _hoist_layout_op(model) -> bool:
    """``layout(elementwise(x))`` -> ``elementwise(layout(x))`` for scalar element-wise ops."""
    graph = model.graph
    producers, consumers, outputs, initializers = _graph_maps(graph)
    nodes = list(graph.node)
    for layout in nodes:
        if layout.op_type not in LAYOUT_OPS or layout.input[0] not in producers:
            continue
        scalar_op = producers[layout.input[0]]
        if scalar_op.op_type not in SCALAR_OPS or not _only_consumer(scalar_op, consumers, outputs):
            continue
        if scalar_op.op_type != "Cast" and _scalar(initializers, scalar_op.input[1]) is None:
            continue
        extra = list(layout.input[1:])  # Reshape's shape must exist before the scalar op runs
        if any(name in producers and nodes.index(producers[name]) > nodes.index(scalar_op) for name in extra):
            continue
        moved_in, middle, moved_out = scalar_op.input[0], scalar_op.output[0], layout.output[0]
        layout.input[0], layout.output[0] = moved_in, middle
        scalar_op.input[0], scalar_op.output[0] = middle, moved_out
        graph.node.remove(layout)
        graph.node.insert(list(graph.node).index(scalar_op), layout)
        for value in list(graph.value_info):
            if value.name == middle:
                graph.value_info.remove(value)
        return True
    return False


def _fold_scale_into_conv(model) -> bool:
    """``Conv(x * s, W)`` -> ``Conv(x, W * s)`` for a scalar ``s`` (zero padding stays zero)."""
    from onnx import numpy_helper

    graph = model.graph
    producers, consumers, outputs, initializers = _graph_maps(graph)
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.input[0] not in producers or conv.input[1] not in initializers:
            continue
        mul = producers[conv.input[0]]
        if mul.op_type != "Mul" or not _only_consumer(mul, consumers, outputs):
            continue
        scalar = _scalar(initializers, mul.input[1])
        if scalar is None or len(consumers.get(conv.input[1], [])) != 1:
            continue
        weights = initializers[conv.input[1]]
        scaled = numpy_helper.to_array(weights) * scalar.reshape(()).astype(numpy_helper.to_array(weights).dtype)
        weights.CopyFrom(numpy_helper.from_array(scaled, weights.name))
        conv.input[0] = mul.input[0]
        graph.node.remove(mul)
        return True
    return False


def _is_zero_state(name: str, producers, initializers) -> bool:
    """Whether ``name`` is an Expand (optionally Unsqueezed) of an all-zero constant."""
    from onnx import numpy_helper

    node = producers.get(name)
    if node is not None and node.op_type == "Unsqueeze":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Expand" or node.input[0] not in initializers:
        return False
    return not np.any(numpy_helper.to_array(initializers[node.input[0]]))


def _drop_zero_initial_state(model) -> bool:
    """``LSTM``/``GRU`` initial_h / initial_c built as zeros: drop the inputs (zero is the default)."""
    graph = model.graph
    producers, consumers, outputs, initializers = _graph_maps(graph)
    for node in graph.node:
        if node.op_type not in ("LSTM", "GRU"):
            continue
        for index in (5, 6):
            if (
                index < len(node.input)
                and node.input[index]
                and _is_zero_state(node.input[index], producers, initializers)
            ):
                node.input[index] = ""
                while node.input and not node.input[-1]:  # trailing optional inputs may be omitted
                    node.input.pop()
                return True
    return False


def _remove_dead_nodes(graph) -> None:
    """Remove nodes none of whose outputs is used or a graph output."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
