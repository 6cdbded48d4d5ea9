"""Video clips for the video task: uint8 frames ``[n, T, H, W, 3]`` from three sources.

- ``synthetic`` (embedded): ``difficulty="easy"``: moving shapes on cluttered, noisy backgrounds;
  class = shape x motion (``circle_left``, ``square_up``, ...), so a model must see both what and
  where to. ``difficulty="hard"``: little characters, class = action x facing direction
  (``walk_left``, ``wave_up``, ... 20 classes), on textured backgrounds with a moving distractor;
  the test split's characters are dressed unlike any training character (other textures, sizes
  and proportions), and there are few clips per class.
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

from rnnforge.core.errors import UserError, first_line

SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down")
CLASS_NAMES = tuple(f"{s}_{m}" for s in SHAPES for m in MOTIONS)
SPLIT_SIZES = {"train": 2400, "valid": 240, "test": 240}
_SPLIT_SEED_OFFSET = {"train": 0, "valid": 7_919, "test": 15_887}
ACTIONS = ("walk", "wave", "jump", "crouch", "punch")
FACINGS = ("left", "right", "up", "down")  # up: seen from the back, down: from the front
HARD_CLASS_NAMES = tuple(f"{a}_{f}" for a in ACTIONS for f in FACINGS)
HARD_SPLIT_SIZES = {"train": 1000, "valid": 200, "test": 200}
HARD_CHARACTERS = {"train": 24, "test": 8}  # the valid split's clips show training characters
DIFFICULTIES = ("easy", "hard")
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


def synthetic(
    split: str, seed: int = 0, frames: int = 16, size: int = 64, n: int | None = None, difficulty: str = "easy"
):
    """A balanced split of synthetic clips: (uint8 ``[n, frames, size, size, 3]``, int64 labels)."""
    hard = difficulty == "hard"
    names = HARD_CLASS_NAMES if hard else CLASS_NAMES
    n = (HARD_SPLIT_SIZES if hard else SPLIT_SIZES)[split] if n is None else n
    rng = np.random.default_rng(seed + _SPLIT_SEED_OFFSET[split])
    labels = np.arange(n) % len(names)
    rng.shuffle(labels)
    if hard:
        # Characters are drawn once per seed: training and validation clips share them, the test
        # split's are another cast, dressed in the test wardrobe.
        cast = "test" if split == "test" else "train"
        characters = [
            character(cast, np.random.default_rng([seed, i, cast == "test"])) for i in range(HARD_CHARACTERS[cast])
        ]

        def make(label: int) -> np.ndarray:
            return character_clip(label, characters[int(rng.integers(len(characters)))], rng, frames, size)
    else:

        def make(label: int) -> np.ndarray:
            return synthetic_clip(label, rng, frames, size)

    clips = np.stack([make(int(label)) for label in labels]) if n else np.zeros((0, frames, size, size, 3), np.uint8)
    return clips, labels.astype(np.int64)


def flip_classes(difficulty: str) -> tuple[int, ...]:
    """The class each synthetic class becomes when its clip is mirrored left to right
    (``*_left`` <-> ``*_right``; every other class keeps its label)."""
    names = HARD_CLASS_NAMES if difficulty == "hard" else CLASS_NAMES
    swap = {"left": "right", "right": "left"}
    return tuple(
        names.index("_".join([*n.split("_")[:-1], swap.get(n.split("_")[-1], n.split("_")[-1])])) for n in names
    )


# Wardrobes: the test cast wears textures and proportions no training character wears.
_TEXTURES = {"train": ("plain", "hstripes", "checks"), "test": ("vstripes", "dots")}
_SCALES = {"train": (0.85, 1.05), "test": (0.75, 1.15)}
_WIDTHS = {"train": (0.85, 1.05), "test": (1.05, 1.3)}


def character(cast: str, rng: np.random.Generator) -> dict:
    """One character's looks: colours of skin, hair, shirt (with its texture), trousers; size."""
    return {
        "skin": rng.integers(120, 256, size=3),
        "hair": rng.integers(0, 120, size=3),
        "shirt": rng.integers(0, 256, size=(2, 3)),  # the texture alternates between two colours
        "trousers": rng.integers(0, 200, size=3),
        "texture": _TEXTURES[cast][int(rng.integers(len(_TEXTURES[cast])))],
        "period": int(rng.integers(2, 5)),
        "scale": rng.uniform(*_SCALES[cast]),
        "width": rng.uniform(*_WIDTHS[cast]),
    }


def _segment(yy, xx, a, b, thickness: float) -> np.ndarray:
    """Pixels within ``thickness`` of the segments ``a`` -> ``b`` (per frame: ``[T, 1, 1]`` ends)."""
    (ay, ax), (by, bx) = a, b
    dy, dx = by - ay, bx - ax
    t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / np.maximum(dy * dy + dx * dx, 1e-6), 0, 1)
    return (yy - ay - t * dy) ** 2 + (xx - ax - t * dx) ** 2 <= thickness * thickness


def _texture(kind: str, period: int, yy, xx) -> np.ndarray:
    """Which of the shirt's two colours each pixel takes."""
    if kind == "hstripes":
        return (yy // period) % 2 == 1
    if kind == "vstripes":
        return (xx // period) % 2 == 1
    if kind == "checks":
        return ((yy // period) + (xx // period)) % 2 == 1
    if kind == "dots":
        return ((yy % (2 * period)) < 2) & ((xx % (2 * period)) < 2)
    return np.zeros(np.broadcast(yy, xx).shape, bool)


def _background(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """A textured floor and wall with clutter: int16 ``[frames, size, size, 3]`` (static)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    low = rng.integers(0, 100, size=(2, 3))
    gradient = (yy / size)[..., None] * (low[1] - low[0]) + low[0]
    wave = 18 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(2, 6))
    base = (gradient + wave[..., None]).astype(np.int16)
    for _ in range(int(rng.integers(3, 7))):  # clutter: rectangles of random colours
        y0, x0 = rng.integers(0, size - 8, size=2)
        h, w = rng.integers(3, 12, size=2)
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    return np.repeat(base[None], frames, axis=0)


def character_clip(label: int, looks: dict, rng: np.random.Generator, frames: int = 8, size: int = 64) -> np.ndarray:
    """One clip of ``looks`` performing class ``label`` of ``HARD_CLASS_NAMES``: uint8 ``[frames, size, size, 3]``.

    The facing direction shows in the face (eyes on the side it faces; the back of the head
    when facing up), the arm's side and, for walking and punching, the direction of motion."""
    action, facing = HARD_CLASS_NAMES[label].split("_")
    s = looks["scale"] * size / 48  # a character of scale 1 stands about 3/4 of the frame high
    head_r, body_h, body_w = 5.5 * s, 13 * s, 5.5 * s * looks["width"]
    leg_len, arm_len = 11 * s, 10 * s
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = yy[None], xx[None]
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    phase = 2 * np.pi * t / rng.uniform(4, 7) + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase)
    vy, vx = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[facing]
    # where the character stands (hip), leaving room for walking
    margin = head_r * 2 + body_h
    room = size - 4 - (margin + leg_len if vy else 2 * (body_w + arm_len))  # for walking, along its direction
    travel = min(rng.uniform(1.6, 2.4) * s, max(0.0, room) / frames) if action == "walk" else 0.0
    span_y = (margin + 2 + (travel * frames if vy < 0 else 0), size - leg_len - 2 - (travel * frames if vy > 0 else 0))
    span_x = (
        body_w + arm_len + 2 + (travel * frames if vx < 0 else 0),
        size - body_w - arm_len - 2 - (travel * frames if vx > 0 else 0),
    )
    hip_y = rng.uniform(span_y[0], max(span_y[0], span_y[1])) + vy * travel * t
    hip_x = rng.uniform(span_x[0], max(span_x[0], span_x[1])) + vx * travel * t
    height = np.ones_like(t)
    if action == "jump":
        hip_y = hip_y - np.abs(wave) * 6 * s
    elif action == "crouch":
        height = 1 - 0.4 * np.abs(wave)
    stride = 4 * s * wave if action == "walk" else np.zeros_like(t)
    legs_spread = 0.0 if vx else 2.5 * s
    clip = _background(rng, frames, size)
    top = hip_y - body_h * height
    head_y, head_x = top - head_r * 0.9, hip_x
    # legs: swinging along the direction of motion when walking (shorter when crouching)
    for side in (-1, 1):
        foot = (hip_y + leg_len * height, hip_x + side * legs_spread + (vx if vx else 1) * side * stride)
        clip[_segment(yy, xx, (hip_y, hip_x + side * legs_spread), foot, 1.6 * s)] = looks["trousers"]
    # torso with the shirt's texture
    torso = (yy >= top) & (yy <= hip_y) & (np.abs(xx - hip_x) <= body_w)
    pattern = _texture(looks["texture"], looks["period"], np.floor(yy - top), np.floor(xx - hip_x))
    clip[torso & ~pattern] = looks["shirt"][0]
    clip[torso & pattern] = looks["shirt"][1]
    # the arm, on the side faced (the right side when facing up or down)
    side_x = vx if vx else 1
    shoulder = (top + 2 * s, hip_x + side_x * body_w * 0.8)
    if action == "wave":
        angle = -np.pi / 2 + 0.6 * wave  # raised, swinging
        hand = (shoulder[0] + arm_len * np.sin(angle), shoulder[1] + side_x * arm_len * np.abs(np.cos(angle)) + 2 * s)
    elif action == "punch":
        reach = arm_len * (0.45 + 0.55 * np.abs(wave))
        hand = (shoulder[0] + (vy * reach if vy else 2 * s), shoulder[1] + (vx * reach if vx else 0))
    else:
        swing = 0.35 * wave if action == "walk" else 0.1
        hand = (shoulder[0] + arm_len * np.cos(swing), shoulder[1] + side_x * arm_len * np.sin(np.abs(swing)))
    clip[_segment(yy, xx, shoulder, hand, 1.5 * s)] = looks["skin"]
    # head: the face shows the facing direction; from the back only hair is seen
    head = (yy - head_y) ** 2 + (xx - head_x) ** 2 <= head_r * head_r
    clip[head] = looks["hair"] if facing == "up" else looks["skin"]
    if facing != "up":
        clip[head & (yy < head_y - head_r * 0.45)] = looks["hair"]
        eye_y = head_y - head_r * 0.1
        eyes = (-0.4, 0.4) if facing == "down" else (0.55 * vx,)
        for e in eyes:
            clip[(yy - eye_y) ** 2 + (xx - head_x - e * head_r) ** 2 <= (1.2 * s) ** 2] = 0
    # a distractor: a bouncing ball of random colour
    by0, bx0 = rng.uniform(4, size - 4, size=2)
    bvy, bvx = rng.normal(0, 2.0, size=2)
    clip[(yy - (by0 + bvy * t)) ** 2 + (xx - (bx0 + bvx * t)) ** 2 <= (3 * s) ** 2] = rng.integers(0, 256, size=3)
    clip += rng.integers(-14, 15, size=clip.shape, dtype=np.int8)  # pixel noise
    return np.clip(clip, 0, 255).astype(np.uint8)


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
            raise UserError(f"{path} cannot be decoded as video: {first_line(exc)}") from None
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
    """Clips under ``root``: ({split: (uint8 clips, labels)}, class names). Prints the class balance
    and the clip lengths found; refuses ``frames`` above the shortest clip's length, naming it."""
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
    lengths: list[tuple[int, Path]] = []
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
                decoded = read_clip(clip)
                lengths.append((len(decoded), clip))
                if len(decoded) >= frames:
                    collected[split][0].append(sample_frames(decoded, frames, size, clip, sampling, rng))
                    collected[split][1].append(label)
    shortest, path = min(lengths, key=lambda item: item[0])
    if shortest < frames:
        short = sum(1 for n, _ in lengths if n < frames)
        raise UserError(
            f"{path} has {shortest} frames, fewer than --frames {frames} "
            f"(the shortest of {short} clip(s) below {frames} frames; lower --frames or remove them)"
        )
    splits = {
        s: (np.stack(c) if c else np.zeros((0, frames, size, size, 3), np.uint8), np.asarray(labels, np.int64))
        for s, (c, labels) in collected.items()
    }
    print(folder_summary(root, class_names, splits, [n for n, _ in lengths]), flush=True)
    return splits, class_names


def folder_summary(root: Path, class_names: Sequence[str], splits: dict, lengths: Sequence[int]) -> str:
    """One line: clips per class (balance) and frames per clip found under ``root``."""
    counts = np.bincount(np.concatenate([y for _, y in splits.values()]), minlength=len(class_names))
    low, high = int(counts.argmin()), int(counts.argmax())
    n = np.asarray(lengths)
    return (
        f"{root}: {len(class_names)} classes, clips per class {counts[low]} ({class_names[low]}) to "
        f"{counts[high]} ({class_names[high]}), mean {counts.mean():.1f}; frames per clip {n.min()} to {n.max()}, "
        f"median {np.median(n):g}"
    )


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


#: Clip augmentation's strengths (``clip_augmenter``).
SHIFT_PIXELS = 4  # spatial shift, the same for every frame of a clip
BRIGHTNESS = 0.12  # added, as a fraction of the 0-255 range
CONTRAST = 0.25  # contrast scaled by 1 +- this, around the clip's mean
TEMPORAL_JITTER = 1  # frames: the clip starts up to this many frames earlier or later (edges repeat)


def clip_augmenter(flips: Sequence[int] | None = None):
    """A tf.data map function ``(clip, label) -> (clip, label)`` on one uint8 ``[T, H, W, 3]`` clip:
    a small spatial shift, brightness and contrast jitter and a temporal jitter; with ``flips``
    (the class each class becomes when mirrored), a left-right mirror half the time, relabelled.
    Training input only: the served model never sees it."""
    import tensorflow as tf

    table = tf.constant(list(flips), tf.int64) if flips is not None else None

    def augment(clip, label):
        frames, height, width = tf.shape(clip)[0], tf.shape(clip)[1], tf.shape(clip)[2]
        x = tf.cast(clip, tf.float32)
        start = tf.random.uniform([], -TEMPORAL_JITTER, TEMPORAL_JITTER + 1, tf.int32)
        x = tf.gather(x, tf.clip_by_value(tf.range(frames) + start, 0, frames - 1))
        m = SHIFT_PIXELS  # shift: a window of the edge-mirrored frames
        x = tf.pad(x, [[0, 0], [m, m], [m, m], [0, 0]], mode="SYMMETRIC")
        dy, dx = tf.unstack(tf.random.uniform([2], 0, 2 * m + 1, tf.int32))
        x = x[:, dy : dy + height, dx : dx + width, :]
        mean = tf.reduce_mean(x)
        x = (x - mean) * tf.random.uniform([], 1 - CONTRAST, 1 + CONTRAST) + mean
        x = x + tf.random.uniform([], -BRIGHTNESS, BRIGHTNESS) * 255
        if table is not None:
            mirror = tf.random.uniform([]) < 0.5
            x = tf.cond(mirror, lambda: tf.reverse(x, axis=[2]), lambda: x)
            label = tf.where(mirror, tf.gather(table, tf.cast(label, tf.int64)), tf.cast(label, tf.int64))
        x = tf.reshape(x, tf.shape(clip))
        return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), label

    return augment
