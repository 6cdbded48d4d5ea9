"""Stroke-3 sequences, the QuickDraw / Sketch-RNN drawing format.

A drawing is a list of strokes, each ``(xs, ys)`` in absolute canvas coordinates (0-255 in the
simplified QuickDraw files). Its stroke-3 form is an ``[n, 3]`` array of rows
``(dx, dy, pen_lifted)``: the offset from the previous point and 1 where the pen lifts after the
point (the end of a stroke). As in the Sketch-RNN ``.npz`` files and the TensorFlow QuickDraw
tutorial, the first point is the origin of the offsets and has no row of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Default number of stroke-3 rows fed to the sketch model (longer drawings are cropped).
MAX_LEN = 100


def strokes_to_stroke3(strokes: Sequence[tuple[Sequence[float], Sequence[float]]]) -> np.ndarray:
    """Convert absolute strokes ``[(xs, ys), ...]`` to stroke-3 rows, int16 ``[n_points - 1, 3]``.

    Raises ``ValueError`` for a coordinate that is not a finite number and for an offset beyond
    int16 (which would otherwise wrap around: 40000 would become -25536)."""
    rows = []
    for xs, ys in strokes:
        if len(xs) != len(ys) or len(xs) == 0:
            raise ValueError(f"stroke with {len(xs)} x and {len(ys)} y coordinates")
        try:
            coords = np.asarray([xs, ys], dtype=np.float64)
        except OverflowError:
            raise ValueError("a coordinate is beyond float64 range") from None
        if coords.ndim != 2:
            raise ValueError("coordinates must be numbers")
        if not np.isfinite(coords).all():
            raise ValueError("coordinates must be finite numbers (no NaN or infinity)")
        pen = np.zeros(len(xs))
        pen[-1] = 1
        rows.append(np.stack([np.trunc(coords[0]), np.trunc(coords[1]), pen], axis=1))
    points = np.concatenate(rows)
    out = points[1:].copy()
    out[:, :2] -= points[:-1, :2]
    check_int16(out)
    return out.astype(np.int16)


def check_int16(rows: np.ndarray) -> None:
    """Raise ``ValueError`` unless every value of ``rows`` fits int16 (stroke-3's storage type)."""
    info = np.iinfo(np.int16)
    if len(rows) and not (info.min <= rows.min() and rows.max() <= info.max):
        worst = rows.flat[np.abs(rows.astype(np.float64)).argmax()]
        raise ValueError(f"offset {worst:g} is beyond int16 range ({info.min}..{info.max})")


def pad_or_crop(drawings: Sequence[np.ndarray], max_len: int = MAX_LEN) -> np.ndarray:
    """Stack stroke-3 drawings into float32 ``[n, max_len, 3]``.

    Longer drawings keep their first ``max_len`` rows; shorter ones are left-padded with zero
    rows (no movement, pen down), so that the recurrent layers end on the last real point and no
    Keras masking is needed (masking exports to a slow ONNX ``Loop``).
    """
    out = np.zeros((len(drawings), max_len, 3), dtype=np.float32)
    for i, drawing in enumerate(drawings):
        rows = np.asarray(drawing, dtype=np.float32)[:max_len]
        if len(rows):
            out[i, max_len - len(rows) :] = rows
    return out


def delta_scale(drawings: Sequence[np.ndarray]) -> float:
    """Standard deviation of the (dx, dy) offsets: Sketch-RNN's normalising scale factor."""
    deltas = np.concatenate([np.asarray(d, np.float64)[:, :2].ravel() for d in drawings])
    return float(np.std(deltas)) or 1.0
