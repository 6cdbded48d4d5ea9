"""Real QuickDraw strokes from local files, in any of the three public formats.

- Sketch-RNN ``.npz`` per category (``sketchrnn/<category>.npz``): keys train/valid/test, object
  arrays of int16 stroke-3 ``[n, 3]``. Loading needs ``allow_pickle``: rnnforge only loads ``.npz``
  files the user named (``--data-dir``) or that the TFDS builder downloaded itself.
- Simplified ndjson per category (``full/simplified/<category>.ndjson``): one JSON object per line,
  ``drawing`` = strokes ``[[x...], [y...]]`` on a 0-255 canvas; converted with
  ``strokes_to_stroke3`` (the same pixel offsets as the ``.npz`` files). These files have no
  splits: a drawing's split follows a hash of its ``key_id`` (80/10/10), so it never moves.
- The TensorFlow tutorial TFRecords (``training.tfrecord-*``, ``eval.tfrecord-*``, ``*.classes``;
  features ``ink`` float32 flat ``[n*3]``, ``shape`` int64 ``[2]``, ``class_index`` int64). Their
  offsets are normalised to the drawing's bounding box; ``eval`` is split alternately into
  valid and test.

``load_local(DIR)`` detects the format by the file names. Errors name the file and the line or
record; ``skip_bad_records=True`` skips (and counts) bad drawings instead.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.strokes import strokes_to_stroke3
from rnnforge.errors import UserError

SPLITS = ("train", "valid", "test")
FORMATS = ("sketchrnn", "ndjson", "tfrecord")


@dataclass
class Drawings:
    """Stroke-3 drawings per split with integer labels, the class names, and what was skipped."""

    format: str
    class_names: list[str]
    splits: dict[str, tuple[list[np.ndarray], np.ndarray]]
    skipped: dict[str, int] = field(default_factory=dict)


def detect_format(data_dir: Path) -> str:
    """``sketchrnn``, ``ndjson`` or ``tfrecord``, from the file names in ``data_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory (expected QuickDraw .npz, .ndjson or TFRecord files)")
    found = {
        "sketchrnn": sorted(data_dir.glob("*.npz")),
        "ndjson": sorted(data_dir.glob("*.ndjson")),
        "tfrecord": sorted(data_dir.glob("*.tfrecord-*")),
    }
    present = [name for name, files in found.items() if files]
    if not present:
        raise UserError(f"--data-dir {data_dir} holds no QuickDraw files (*.npz, *.ndjson or *.tfrecord-*)")
    if len(present) > 1:
        raise UserError(f"--data-dir {data_dir} mixes formats ({', '.join(present)}); keep one format per folder")
    return present[0]


def load_local(data_dir: Path, categories: list[str] | None = None, skip_bad_records: bool = False,
               max_per_class: int | None = None) -> Drawings:
    """Read every drawing under ``data_dir`` (one format), optionally only ``categories``."""
    data_dir = Path(data_dir)
    fmt = detect_format(data_dir)
    if fmt == "tfrecord":
        drawings = _read_tfrecords(data_dir, skip_bad_records)
        drawings = _select_classes(drawings, categories, data_dir)
    else:
        pattern = "*.npz" if fmt == "sketchrnn" else "*.ndjson"
        files = {p.stem: p for p in sorted(data_dir.glob(pattern))}
        if categories:
            missing = [c for c in categories if c not in files]
            if missing:
                raise UserError(f"category {missing[0]!r} is not in {data_dir} (have: {', '.join(files)})")
            files = {c: files[c] for c in categories}
        reader = read_npz if fmt == "sketchrnn" else read_ndjson
        per_class = {name: reader(path, skip_bad_records) for name, path in files.items()}
        drawings = _combine(fmt, per_class)
    if len(drawings.class_names) < 2:
        raise UserError(f"{data_dir} has {len(drawings.class_names)} category; a classifier needs at least 2")
    if max_per_class:
        drawings = _cap(drawings, max_per_class)
    return drawings


def read_npz(path: Path, skip_bad_records: bool = False) -> tuple[dict[str, list[np.ndarray]], int]:
    """One Sketch-RNN category file: ``{split: [int16 [n, 3], ...]}`` and the number skipped."""
    try:
        with np.load(path, allow_pickle=True, encoding="latin1") as archive:  # user-named file: see module doc
            missing = [s for s in SPLITS if s not in archive.files]
            if missing:
                raise UserError(f"{path}: no {missing[0]!r} array (a Sketch-RNN .npz has train, valid and test)")
            raw = {s: archive[s] for s in SPLITS}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz (truncated or corrupt?): {exc}") from None
    out, skipped = {}, 0
    for split, items in raw.items():
        out[split] = []
        for i, item in enumerate(items):
            drawing = np.asarray(item)
            if drawing.ndim != 2 or drawing.shape[1] != 3 or len(drawing) == 0:
                if not skip_bad_records:
                    raise UserError(f"{path} {split}[{i}]: expected stroke-3 rows of shape [n, 3], got {drawing.shape}")
                skipped += 1
                continue
            out[split].append(drawing.astype(np.int16))
    if not any(out.values()):
        raise UserError(f"{path} holds no drawings")
    return out, skipped


def ndjson_split(key_id: str) -> str:
    """The split of a simplified-ndjson drawing: a stable hash of its ``key_id`` (80/10/10)."""
    bucket = zlib.crc32(str(key_id).encode()) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def read_ndjson(path: Path, skip_bad_records: bool = False) -> tuple[dict[str, list[np.ndarray]], int]:
    """One simplified-ndjson category file, converted to stroke-3 and split by ``key_id``."""
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    skipped = 0
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read as UTF-8 text: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            drawing = record["drawing"]
            rows = strokes_to_stroke3([(stroke[0], stroke[1]) for stroke in drawing])
            key = record.get("key_id", f"{Path(path).stem}-{number}")
        except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as exc:
            if not skip_bad_records:
                reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else \
                    "no 'drawing'" if isinstance(exc, KeyError) else f"bad 'drawing' ({exc})"
                raise UserError(f"{path} line {number}: {reason}") from None
            skipped += 1
            continue
        if len(rows) == 0:
            skipped += 1
            continue
        out[ndjson_split(key)].append(rows)
    if not any(out.values()):
        raise UserError(f"{path} holds no drawings")
    return out, skipped


def _read_tfrecords(data_dir: Path, skip_bad_records: bool) -> Drawings:
    import tensorflow as tf

    class_files = sorted(data_dir.glob("*.classes"))
    if not class_files:
        raise UserError(f"{data_dir} has TFRecords but no *.classes file (one class name per line)")
    class_names = [c.strip() for c in class_files[0].read_text().splitlines() if c.strip()]
    features = {"ink": tf.io.VarLenFeature(tf.float32), "shape": tf.io.FixedLenFeature([2], tf.int64),
                "class_index": tf.io.FixedLenFeature([1], tf.int64)}
    splits: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    skipped = 0
    for prefix in ("training", "eval"):
        files = sorted(data_dir.glob(f"{prefix}.tfrecord-*"))
        if not files and prefix == "training":
            raise UserError(f"{data_dir} has no training.tfrecord-* files")
        for path in files:
            try:
                records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
            except tf.errors.OpError as exc:
                raise UserError(f"{path} is not a readable TFRecord file (truncated?): {exc.message}") from None
            for index, serialized in enumerate(records):
                try:
                    example = tf.io.parse_single_example(serialized, features)
                    shape = example["shape"].numpy()
                    ink = tf.sparse.to_dense(example["ink"]).numpy().reshape(shape)
                    label = int(example["class_index"].numpy()[0])
                    if shape[1] != 3 or not 0 <= label < len(class_names):
                        raise ValueError(f"shape {shape.tolist()}, class_index {label}")
                except (tf.errors.OpError, ValueError) as exc:
                    if not skip_bad_records:
                        message = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
                        raise UserError(f"{path} record {index}: {message.splitlines()[0]}") from None
                    skipped += 1
                    continue
                split = "train" if prefix == "training" else ("valid" if index % 2 == 0 else "test")
                splits[split][0].append(ink.astype(np.float32))
                splits[split][1].append(label)
    return Drawings("tfrecord", class_names, {s: (d, np.asarray(l, np.int64)) for s, (d, l) in splits.items()},
                    {str(data_dir): skipped} if skipped else {})


def _combine(fmt: str, per_class: dict) -> Drawings:
    splits = {}
    for split in SPLITS:
        drawings, labels = [], []
        for label, (by_split, _) in enumerate(per_class.values()):
            drawings.extend(by_split[split])
            labels.extend([label] * len(by_split[split]))
        splits[split] = (drawings, np.asarray(labels, np.int64))
    skipped = {name: n for name, (_, n) in per_class.items() if n}
    return Drawings(fmt, list(per_class), splits, skipped)


def _select_classes(drawings: Drawings, categories: list[str] | None, data_dir: Path) -> Drawings:
    if not categories:
        return drawings
    missing = [c for c in categories if c not in drawings.class_names]
    if missing:
        raise UserError(f"category {missing[0]!r} is not in {data_dir} (have: {', '.join(drawings.class_names)})")
    remap = {drawings.class_names.index(c): i for i, c in enumerate(categories)}
    splits = {}
    for split, (items, labels) in drawings.splits.items():
        keep = [i for i, label in enumerate(labels) if int(label) in remap]
        splits[split] = ([items[i] for i in keep], np.asarray([remap[int(labels[i])] for i in keep], np.int64))
    return Drawings(drawings.format, list(categories), splits, drawings.skipped)


def _cap(drawings: Drawings, max_per_class: int) -> Drawings:
    """At most ``max_per_class`` training drawings per class (validation and test untouched)."""
    items, labels = drawings.splits["train"]
    counts: dict[int, int] = {}
    keep = []
    for i, label in enumerate(labels):
        counts[int(label)] = counts.get(int(label), 0) + 1
        if counts[int(label)] <= max_per_class:
            keep.append(i)
    splits = dict(drawings.splits)
    splits["train"] = ([items[i] for i in keep], labels[keep])
    return Drawings(drawings.format, drawings.class_names, splits, drawings.skipped)
