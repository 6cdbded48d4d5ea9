"""The parity gate: TensorFlow against ONNX Runtime on the same inputs, optimum-style.

``check_parity`` compares every output (shape, max abs diff against ``atol``: the gate, a worst
case over the examples; a classifier's top-1 agreement, reported with its 95 % Wilson lower bound,
``top1_record``); ``enforce_gate`` prints a gate's checks and refuses, as one line, a record
that failed. The fp32 export, its fp16 variant (``onnx_export``) and the int8 variant's accuracy
gate (``int8``) all end here, so none of them imports another for it.
"""

from __future__ import annotations

import numpy as np

from rnnforge.core.arrays import Inputs, count, feeds
from rnnforge.core.errors import ParityError
from rnnforge.core.stats import describe_rate, rate_gate, wilson_lower


def parity_gate(model, onnx_model, spec, x: Inputs, atol: float, subject: str, unwritten: str) -> dict:
    """``check_parity`` of ``onnx_model`` on ``x``, each check printed; ``ParityError`` on failure,
    naming the ``subject`` ("ONNX Runtime", "the fp16 variant") and what was ``unwritten``."""
    parity = check_parity(model, onnx_model.SerializeToString(), spec, x, atol)
    return enforce_gate(parity, f"{subject} differs from TensorFlow beyond atol {atol:g}", unwritten)


def enforce_gate(record: dict, failure: str, unwritten: str) -> dict:
    """Print ``record["checks"]``; unless ``record["passed"]``, raise ``ParityError`` as one line:
    ``failure``, the record's failures, and what was ``unwritten``. Returns ``record``."""
    for line in record["checks"]:
        print(line, flush=True)
    if not record["passed"]:
        raise ParityError(f"{failure}: " + "; ".join(record["failures"]) + f" ({unwritten})")
    return record


def top1_record(pred: np.ndarray, reference: np.ndarray, threshold: float | None = None) -> dict:
    """Top-1 agreement of ``pred`` with ``reference`` (class scores, ``[n, classes]``): the rate, the
    count agreeing, the examples and the rate's 95 % Wilson lower bound; with ``threshold``, also
    ``top1_gate`` (``core.stats.rate_gate``: met only when the bound clears it)."""
    n = int(len(reference))
    agreed = int(np.sum(pred.argmax(-1) == reference.argmax(-1)))
    record = {
        "top1_agreement": agreed / n if n else float("nan"),
        "top1_agreed": agreed,
        "top1_examples": n,
        "top1_lower_bound": wilson_lower(agreed, n) if n else 0.0,
    }
    if threshold is not None and n:
        record["top1_gate"] = rate_gate(agreed, n, threshold)
    return record


def describe_top1(record: dict) -> str:
    """ "0.9961 (255 of 256; 95 % lower bound 0.9784)": a ``top1_record`` in words."""
    if "top1_gate" in record:
        return describe_rate(record["top1_gate"])
    return (
        f"{record['top1_agreement']:.4f} ({record['top1_agreed']:,} of {record['top1_examples']:,}; "
        f"95 % lower bound {record['top1_lower_bound']:.4f})"
    )


def check_parity(model, onnx_bytes: bytes, spec, x: Inputs, atol: float) -> dict:
    """Run TensorFlow and ONNX Runtime (CPU) on ``x``; compare every output (optimum-style)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    expected = model(x, training=False)
    expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
    # every output the graph has (check_graph: the spec's for this run), in the Keras model's order
    declared = {t.name: t for t in spec.onnx.outputs}
    tensors = [declared[o.name] for o in session.get_outputs() if o.name in declared] or list(spec.onnx.outputs)
    actual = session.run([t.name for t in tensors], feeds(x, [i.name for i in session.get_inputs()]))
    record = {"atol": atol, "batch": count(x), "outputs": {}, "checks": [], "failures": []}
    worst = 0.0
    if len(expected) != len(actual):
        record["failures"].append(f"{len(actual)} outputs, TensorFlow {len(expected)}")
    for tensor, want, got in zip(tensors, expected, actual):
        if want.shape != got.shape:
            record["failures"].append(f"{tensor.name}: shape {got.shape}, TensorFlow {want.shape}")
            record["checks"].append(f"  -[x] {tensor.name}: shape {got.shape} != {want.shape}")
            continue
        diff = float(np.max(np.abs(want.astype(np.float64) - got))) if want.size else 0.0
        worst = max(worst, diff)
        ok = diff <= atol
        record["outputs"][tensor.name] = {"shape": list(got.shape), "max_abs_diff": diff, "within_atol": ok}
        record["checks"].append(
            f"  -[{'✓' if ok else 'x'}] {tensor.name}: shape {list(got.shape)}, max abs diff {diff:.2e}"
        )
        if not ok:
            record["failures"].append(f"{tensor.name}: max diff = {diff:.3e}")
        if spec.kind == "classification":
            record.update(top1_record(got, want))
            record["checks"][-1] += f"; top-1 agreement {describe_top1(record)}"
    record["max_abs_diff"] = worst
    record["passed"] = not record["failures"]
    return record
