"""Stroke-3 conversion and the embedded synthetic sketch dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from rnnforge.pipeline import sketch_synthetic, strokes


def test_stroke3_of_a_two_stroke_drawing():
    rows = strokes.strokes_to_stroke3([([10, 20, 25], [5, 5, 15]), ([0, 3], [0, 4])])
    assert rows.dtype == np.int16
    np.testing.assert_array_equal(rows, [[10, 0, 0], [5, 10, 1], [-25, -15, 0], [3, 4, 1]])


@pytest.mark.skipif(not (SHARED_DATA / "quickdraw_simplified").is_dir(), reason="needs ../shared/data samples")
def test_stroke3_of_real_quickdraw_drawings():
    """Offsets add back up to the absolute points; one pen lift per stroke."""
    lines = (SHARED_DATA / "quickdraw_simplified" / "star.ndjson").read_text().splitlines()
    for line in lines[:25]:
        drawing = json.loads(line)["drawing"]
        rows = strokes.strokes_to_stroke3(drawing)
        xs = np.concatenate([s[0] for s in drawing])
        ys = np.concatenate([s[1] for s in drawing])
        assert len(rows) == len(xs) - 1
        np.testing.assert_array_equal(xs[0] + np.concatenate([[0], np.cumsum(rows[:, 0])]), xs)
        np.testing.assert_array_equal(ys[0] + np.concatenate([[0], np.cumsum(rows[:, 1])]), ys)
        assert rows[:, 2].sum() == len(drawing)
        assert rows[-1, 2] == 1


def test_pad_or_crop_left_pads_and_crops():
    short = np.ones((3, 3), np.int16)
    long = np.arange(150 * 3).reshape(150, 3)
    out = strokes.pad_or_crop([short, long], max_len=100)
    assert out.shape == (2, 100, 3) and out.dtype == np.float32
    assert not out[0, :97].any() and (out[0, 97:] == 1).all()
    np.testing.assert_array_equal(out[1], long[:100])


def test_synthetic_split_shapes_and_balance():
    drawings, labels = sketch_synthetic.generate("valid", seed=0)
    assert len(drawings) == sketch_synthetic.SPLIT_SIZES["valid"] == len(labels)
    counts = np.bincount(labels, minlength=len(sketch_synthetic.CLASS_NAMES))
    assert len(sketch_synthetic.CLASS_NAMES) >= 8 and counts.min() == counts.max()
    for d in drawings:
        assert d.dtype == np.int16 and d.ndim == 2 and d.shape[1] == 3
        assert set(np.unique(d[:, 2])) <= {0, 1} and d[-1, 2] == 1
        absolute = np.cumsum(d[:, :2].astype(int), axis=0)
        assert np.ptp(absolute[:, 0]) <= 255 and np.ptp(absolute[:, 1]) <= 255
    lengths = np.array([len(d) for d in drawings])
    # Length varies within each class, so it cannot give the class away on its own.
    for c in range(len(sketch_synthetic.CLASS_NAMES)):
        assert np.ptp(lengths[labels == c]) > 20


def test_synthetic_is_deterministic_and_splits_differ():
    a, la = sketch_synthetic.generate("test", seed=3, size=50)
    b, lb = sketch_synthetic.generate("test", seed=3, size=50)
    c, _ = sketch_synthetic.generate("train", seed=3, size=50)
    d, _ = sketch_synthetic.generate("test", seed=4, size=50)
    np.testing.assert_array_equal(la, lb)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c))
    assert not all(np.array_equal(x, y) for x, y in zip(a, d))
