"""Video clips for the video task: uint8 frames ``[n, T, H, W, 3]`` from three sources.

- ``synthetic`` (embedded): moving shapes on cluttered, noisy backgrounds; class = shape x
  motion (``circle_left``, ``square_up``, ...), so a model must see both what and where to.
- ``folder``: your own clips, ``ROOT/<class>/<clip>`` or ``ROOT/{train,test}/<class>/<clip>``,
  as ``.mp4``/``.avi`` (decoded by imageio-ffmpeg) or ``.npy`` uint8 ``[T, H, W, 3]``. Without a
  train/test level a clip's split follows a hash of its path (80/10/10), so it never moves.
- ``ucf101``: TensorFlow Datasets' own builder (configs such as ``ucf101_1_256``).

Each clip is reduced to T frames (uniformly spaced, or a random contiguous run with
``sampling="random"``) and resized to ``size`` x ``size``. Errors name the file.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnforge.core.errors import UserError

SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down")
CLASS_NAMES = tuple(f"{s}_{m}" for s in SHAPES for m in MOTIONS)
SPLIT_SIZES = {"train": 2400, "valid": 240, "test": 240}
_SPLIT_SEED_OFFSET = {"train": 0, "valid": 7_919, "test": 15_887}
VIDEO_SUFFIXES = (".mp4", ".avi")
CLIP_SUFFIXES = VIDEO_SUFFIXES + (".npy",)
SPLITS = ("train", "valid", "test")


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    # triangle pointing up: inside when below the two slanted edges and above the base
    return (yy <= cy + r * 0.8) & (yy - (cy - r) >= 2 * np.abs(xx - cx))


def synthetic_clip(label: int, rng: np.random.Generator, frames: int = 16, size: int = 64) -> np.ndarray:
    """One clip of class ``label``: uint8 ``[frames, size, size, 3]``."""
    shape, motion = CLASS_NAMES[label].split("_")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = rng.integers(0, 90, size=3)
    base = np.broadcast_to(background, (size, size, 3)).astype(np.int16).copy()
    for _ in range(int(rng.integers(2, 6))):  # static clutter: rectangles of random colours
        y0, x0 = rng.integers(0, size - 8, size=2)
        h, w = rng.integers(4, 14, size=2)
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    r = rng.uniform(size * 0.12, size * 0.2)
    speed = rng.uniform(size * 0.5, size * 0.8) / frames
    direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[motion]
    travel = speed * (frames - 1)
    start = []
    for d in direction:  # start so that the whole path stays inside the frame
        lo, hi = (
            (r + 2, size - r - 2 - travel)
            if d > 0
            else (r + 2 + travel, size - r - 2)
            if d < 0
            else (r + 2, size - r - 2)
        )
        start.append(rng.uniform(lo, max(lo, hi)))
    colour = rng.integers(140, 256, size=3)
    distractor = rng.uniform(4, size - 4, size=2), rng.normal(0, 1.5, size=2)
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    cy, cx = start[0] + direction[0] * speed * t, start[1] + direction[1] * speed * t
    clip = np.repeat(base[None], frames, axis=0)
    clip[_shape_mask(shape, yy[None], xx[None], cy, cx, r)] = colour
    (dy0, dx0), (vy, vx) = distractor
    clip[(yy[None] - (dy0 + vy * t)) ** 2 + (xx[None] - (dx0 + vx * t)) ** 2 <= 4] = 255  # a wandering dot
    clip += rng.integers(-14, 15, size=clip.shape, dtype=np.int8)  # pixel noise (std ~8.4)
    return np.clip(clip, 0, 255).astype(np.uint8)


def synthetic(split: str, seed: int = 0, frames: int = 16, size: int = 64, n: int | None = None):
    """A balanced split of synthetic clips: (uint8 ``[n, frames, size, size, 3]``, int64 labels)."""
    n = SPLIT_SIZES[split] if n is None else n
    rng = np.random.default_rng(seed + _SPLIT_SEED_OFFSET[split])
    labels = np.arange(n) % len(CLASS_NAMES)
    rng.shuffle(labels)
    clips = (
        np.stack([synthetic_clip(int(label), rng, frames, size) for label in labels])
        if n
        else np.zeros((0, frames, size, size, 3), np.uint8)
    )
    return clips, labels.astype(np.int64)


def read_clip(path: Path) -> np.ndarray:
    """All frames of one clip file, uint8 ``[T, H, W, 3]``."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            frames = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UserError(
                f"{path} is not a readable .npy array (frames of mixed sizes, or truncated?): {exc}"
            ) from None
    else:
        import imageio.v3 as iio

        try:
            frames = iio.imread(path, extension=path.suffix)
        except Exception as exc:  # imageio/ffmpeg raise many types for undecodable files
            raise UserError(
                f"{path} cannot be decoded as video: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            ) from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"{path}: expected uint8 frames [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def sample_frames(
    frames: np.ndarray, count: int, size: int, path, sampling: str = "uniform", rng: np.random.Generator | None = None
) -> np.ndarray:
    """``count`` frames (uniformly spaced, or a random contiguous run), resized to ``size``."""
    if len(frames) < count:
        raise UserError(f"{path} has {len(frames)} frames, fewer than --frames {count}")
    if sampling == "random":
        start = int((rng or np.random.default_rng(0)).integers(0, len(frames) - count + 1))
        picked = frames[start : start + count]
    else:
        picked = frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]
    if picked.shape[1:3] != (size, size):
        import tensorflow as tf

        picked = tf.cast(tf.round(tf.image.resize(picked, (size, size), antialias=True)), tf.uint8).numpy()
    return picked


def folder_split(relative: str) -> str:
    """Split of a clip in a folder without train/test level: stable hash of its path (80/10/10)."""
    bucket = zlib.crc32(relative.encode()) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def load_folder(root: Path, frames: int, size: int, sampling: str = "uniform", seed: int = 0):
    """Clips under ``root``: ({split: (uint8 clips, labels)}, class names)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data-dir {root} is not a directory (expected ROOT/<class>/<clip> folders)")
    levels = [root / s for s in ("train", "test") if (root / s).is_dir()]
    class_roots = levels or [root]
    class_names = sorted({p.name for level in class_roots for p in level.iterdir() if p.is_dir()})
    if len(class_names) < 2:
        raise UserError(f"{root} has {len(class_names)} class folder(s); a classifier needs at least 2")
    rng = np.random.default_rng(seed)
    collected: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    for level in class_roots:
        for label, name in enumerate(class_names):
            folder = level / name
            clips = sorted(p for p in folder.glob("*") if p.suffix.lower() in CLIP_SUFFIXES) if folder.is_dir() else []
            if not clips:
                raise UserError(f"{folder} holds no clips ({', '.join(CLIP_SUFFIXES)})")
            for clip in clips:
                relative = clip.relative_to(root).as_posix()
                if levels:
                    split = (
                        "test" if level.name == "test" else ("valid" if folder_split(relative) != "train" else "train")
                    )
                else:
                    split = folder_split(relative)
                collected[split][0].append(sample_frames(read_clip(clip), frames, size, clip, sampling, rng))
                collected[split][1].append(label)
    splits = {
        s: (np.stack(c) if c else np.zeros((0, frames, size, size, 3), np.uint8), np.asarray(labels, np.int64))
        for s, (c, labels) in collected.items()
    }
    return splits, class_names


def load_ucf101(
    config_name: str,
    frames: int,
    size: int,
    categories: Sequence[str] | None = None,
    sampling: str = "uniform",
    seed: int = 0,
    data_dir: str | None = None,
):
    """UCF101 through TFDS's own builder (downloads ~6.5 GB the first time)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(f"ucf101/{config_name}", data_dir=data_dir)
    builder.download_and_prepare()
    names = builder.info.features["label"].names
    keep = {names.index(c): i for i, c in enumerate(categories)} if categories else {i: i for i in range(len(names))}
    rng = np.random.default_rng(seed)
    splits = {}
    for split, tfds_split in (("train", "train[:90%]"), ("valid", "train[90%:]"), ("test", "test")):
        clips, labels = [], []
        for example in tfds.as_numpy(builder.as_dataset(split=tfds_split)):
            if int(example["label"]) in keep:
                clips.append(sample_frames(example["video"], frames, size, f"ucf101 {split}", sampling, rng))
                labels.append(keep[int(example["label"])])
        splits[split] = (np.stack(clips), np.asarray(labels, np.int64))
    return splits, [names[i] for i in keep]
