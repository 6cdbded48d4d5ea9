"""Embedded sketch dataset: procedurally drawn shapes in exact QuickDraw stroke-3 form.

Ten classes (circle, square, triangle, star, zigzag, spiral, wave, plus, heart, arrow) drawn
with random rotation, aspect, size, position, start point and direction, hand wobble, pixel
noise, variable point density (so length is not a give-away), sometimes split into several
strokes, and sometimes with a stray scribble. Coordinates are rounded to the 0-255 canvas like
the simplified QuickDraw files, then converted with ``strokes_to_stroke3``. Deterministic from a
seed. Run ``python -m pipeline.sketch_synthetic`` to print a few drawings' shapes.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnforge.pipeline.strokes import strokes_to_stroke3

CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "star",
    "zigzag",
    "spiral",
    "wave",
    "plus",
    "heart",
    "arrow",
)
SPLIT_SIZES = {"train": 8000, "valid": 1000, "test": 1000}
_SPLIT_SEED_OFFSET = {"train": 0, "valid": 1_000_003, "test": 2_000_029}

Path2 = np.ndarray  # [k, 2] float64 points in unit coordinates (about -1..1)


def _regular_polygon(n: int, rng: np.random.Generator, star: bool = False) -> list[Path2]:
    step = 2 if star else 1
    angles = np.pi / 2 + 2 * np.pi * (np.arange(n + 1) * step % n) / n
    pts = np.stack([np.cos(angles), -np.sin(angles)], axis=1)
    return [_rotate_start(pts, rng, closed=True)]


def _rotate_start(pts: Path2, rng: np.random.Generator, closed: bool) -> Path2:
    """Start a closed path at a random vertex, and draw any path in a random direction."""
    if closed:
        body = pts[:-1]
        body = np.roll(body, -int(rng.integers(len(body))), axis=0)
        pts = np.concatenate([body, body[:1]])
    return pts[::-1] if rng.random() < 0.5 else pts


def _circle(rng):
    t = np.linspace(0, 2 * np.pi, 60) + rng.uniform(0, 2 * np.pi)
    return [_rotate_start(np.stack([np.cos(t), np.sin(t)], 1), rng, closed=False)]


def _spiral(rng):
    turns = rng.uniform(2.0, 3.2)
    t = np.linspace(0, 2 * np.pi * turns, 120)
    r = 0.1 + 0.9 * t / t[-1]
    return [_rotate_start(np.stack([r * np.cos(t), r * np.sin(t)], 1), rng, closed=False)]


def _zigzag(rng):
    n = int(rng.integers(4, 8))
    xs = np.linspace(-1, 1, n + 1)
    ys = np.where(np.arange(n + 1) % 2 == 0, -0.5, 0.5) * rng.uniform(0.6, 1.2)
    return [_rotate_start(np.stack([xs, ys], 1), rng, closed=False)]


def _wave(rng):
    periods = rng.uniform(1.5, 3.0)
    xs = np.linspace(-1, 1, 80)
    ys = 0.45 * np.sin(np.pi * periods * xs + rng.uniform(0, np.pi)) * rng.uniform(0.6, 1.2)
    return [_rotate_start(np.stack([xs, ys], 1), rng, closed=False)]


def _plus(rng):
    a = np.array([[0.0, -1.0], [0.0, 1.0]])
    b = np.array([[-1.0, 0.0], [1.0, 0.0]])
    strokes = [_rotate_start(a, rng, False), _rotate_start(b, rng, False)]
    return strokes[::-1] if rng.random() < 0.5 else strokes


def _heart(rng):
    t = np.linspace(0, 2 * np.pi, 80)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1) / 17.0
    return [_rotate_start(pts, rng, closed=True)]


def _arrow(rng):
    shaft = np.array([[-1.0, 0.0], [1.0, 0.0]])
    head = np.array([[0.55, -0.45], [1.0, 0.0], [0.55, 0.45]])
    if rng.random() < 0.5:  # drawn in one go: shaft then head without lifting the pen
        return [np.concatenate([shaft, head[[0]], head[1:]])]
    return [shaft, _rotate_start(head, rng, False)]


_SHAPES = {
    "circle": _circle,
    "square": lambda rng: _regular_polygon(4, rng),
    "triangle": lambda rng: _regular_polygon(3, rng),
    "star": lambda rng: _regular_polygon(5, rng, star=True),
    "zigzag": _zigzag,
    "spiral": _spiral,
    "wave": _wave,
    "plus": _plus,
    "heart": _heart,
    "arrow": _arrow,
}


def _resample(path: Path2, spacing: float) -> Path2:
    """Points every ``spacing`` units of arc length along a polyline (keeps both ends)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(np.ceil(arc[-1] / spacing)) + 1)
    s = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(s, arc, path[:, 0]), np.interp(s, arc, path[:, 1])], axis=1)


def _split_stroke(path: Path2, rng: np.random.Generator) -> list[Path2]:
    """Sometimes lift the pen mid-shape, as people do."""
    if len(path) < 8 or rng.random() > 0.25:
        return [path]
    cut = int(rng.integers(3, len(path) - 3))
    return [path[: cut + 1], path[cut:]]


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one example of class ``label``; returns int16 stroke-3 ``[n, 3]``."""
    strokes = _SHAPES[CLASS_NAMES[label]](rng)
    angle = rng.uniform(-np.pi / 6, np.pi / 6)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    aspect = np.array([rng.uniform(0.75, 1.3), rng.uniform(0.75, 1.3)])
    size = rng.uniform(50, 110)  # half-width in pixels
    centre = rng.uniform(size + 10, 255 - size - 10, size=2) if size < 117 else np.array([128, 128])
    spacing = rng.uniform(0.06, 0.25)  # point density varies, so length is not a class cue
    wobble_f = rng.uniform(1, 3, size=2)
    wobble_p = rng.uniform(0, 2 * np.pi, size=2)
    wobble_a = rng.uniform(0.0, 0.06)

    absolute = []
    for path in strokes:
        path = _resample(path, spacing)
        u = np.linspace(0, 1, len(path))[:, None]
        path = path + wobble_a * np.sin(2 * np.pi * wobble_f * u + wobble_p)
        path = (path * aspect) @ rot.T * size + centre
        path = path + rng.normal(0, 1.2, size=path.shape)
        absolute.extend(_split_stroke(path, rng))
    if rng.random() < 0.2:  # a stray scribble somewhere on the canvas
        start = rng.uniform(20, 235, size=2)
        steps = rng.normal(0, 6, size=(int(rng.integers(2, 6)), 2))
        absolute.append(start + np.cumsum(steps, axis=0))

    canvas = [np.clip(np.rint(p), 0, 255).astype(np.int64) for p in absolute]
    return strokes_to_stroke3([(p[:, 0], p[:, 1]) for p in canvas])


def generate(split: str, seed: int = 0, size: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Generate a split: (list of int16 stroke-3 drawings, int64 labels), balanced over classes.

    The same ``(split, seed, size)`` always gives the same drawings; splits never share a seed.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_SIZES)}")
    drawings, labels = _drawn(split, seed, SPLIT_SIZES[split] if size is None else size)
    return list(drawings), labels.copy()


@functools.lru_cache(maxsize=3)
def _drawn(split: str, seed: int, n: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """One split's drawings (read-only) and labels, drawn once per process: a training driver
    loads the data before Ray starts and again to score the final model (a second or so each)."""
    rng = np.random.default_rng(seed + _SPLIT_SEED_OFFSET[split])
    labels = np.arange(n) % len(CLASS_NAMES)
    rng.shuffle(labels)
    drawings = tuple(draw(int(label), rng) for label in labels)
    for drawing in drawings:
        drawing.flags.writeable = False
    return drawings, labels.astype(np.int64)


if __name__ == "__main__":
    xs, ys = generate("test", size=10)
    for x, y in zip(xs, ys):
        print(f"{CLASS_NAMES[y]:>9}: {len(x)} points, {int(x[:, 2].sum())} strokes")
