"""Real QuickDraw strokes from local files, in any of the three public formats.

- Sketch-RNN ``.npz`` per category (``sketchrnn/<category>.npz``): keys train/valid/test, object
  arrays of int16 stroke-3 ``[n, 3]``. Object arrays are pickles: ``read_npz`` unpickles them with
  ``ArrayUnpickler``, which allows only numpy's array reconstruction and refuses any other global
  (a crafted file cannot run code).
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
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnforge.core.errors import UserError, first_line
from rnnforge.pipeline.strokes import check_int16, strokes_to_stroke3

SPLITS = ("train", "valid", "test")


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
        raise UserError(
            f"--data-dir {data_dir} is not a directory (expected QuickDraw .npz, .ndjson or TFRecord files)"
        )
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


def load_local(
    data_dir: Path,
    categories: Sequence[str] | None = None,
    skip_bad_records: bool = False,
    max_per_class: int | None = None,
) -> Drawings:
    """Read every drawing under ``data_dir`` (one format) into memory, optionally only ``categories``."""
    class_names, _ = category_sources(data_dir, categories)
    splits: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    skipped: dict[str, int] = {}
    for split, _, drawing, label in iter_drawings(data_dir, categories, skip_bad_records, max_per_class, skipped):
        splits[split][0].append(drawing)
        splits[split][1].append(label)
    return Drawings(
        detect_format(data_dir),
        class_names,
        {s: (d, np.asarray(labels, np.int64)) for s, (d, labels) in splits.items()},
        skipped,
    )


def category_sources(data_dir: Path, categories: Sequence[str] | None = None) -> tuple[list[str], dict[str, Path]]:
    """The class names (``categories`` or all found, in order) and, for per-category formats,
    each class's file. Refuses absent categories and fewer than two classes."""
    data_dir = Path(data_dir)
    fmt = detect_format(data_dir)
    if fmt == "tfrecord":
        files: dict[str, Path] = {}
        found = _tfrecord_class_names(data_dir)
    else:
        files = {p.stem: p for p in sorted(data_dir.glob("*.npz" if fmt == "sketchrnn" else "*.ndjson"))}
        found = list(files)
    if categories:
        missing = [c for c in categories if c not in found]
        if missing:
            raise UserError(f"category {missing[0]!r} is not in {data_dir} (have: {', '.join(found)})")
        files = {c: files[c] for c in categories if c in files}
    names = list(categories or found)
    if len(names) < 2:
        raise UserError(f"{data_dir} has {len(names)} category; a classifier needs at least 2")
    return names, files


def iter_drawings(
    data_dir: Path,
    categories: Sequence[str] | None = None,
    skip_bad_records: bool = False,
    max_per_class: int | None = None,
    skipped: dict[str, int] | None = None,
):
    """Yield ``(split, key, stroke3, label)`` for every drawing under ``data_dir``, one category
    file (or one TFRecord file) at a time, so memory stays bounded by the largest file.

    ``max_per_class`` caps the training drawings per class (valid and test are untouched);
    ``skipped`` (if given) receives the number of bad drawings skipped per file.
    """
    data_dir = Path(data_dir)
    class_names, files = category_sources(data_dir, categories)
    kept = [0] * len(class_names)
    if detect_format(data_dir) == "tfrecord":
        records = _iter_tfrecords(data_dir, class_names, skip_bad_records, skipped)
    else:
        records = _iter_category_files(files, skip_bad_records, skipped)
    for split, key, drawing, label in records:
        if split == "train" and max_per_class:
            if kept[label] >= max_per_class:
                continue
            kept[label] += 1
        yield split, key, drawing, label


def _iter_category_files(files: dict[str, Path], skip_bad_records: bool, skipped: dict | None):
    for label, (name, path) in enumerate(files.items()):
        reader = read_npz if path.suffix == ".npz" else read_ndjson
        by_split, n_skipped = reader(path, skip_bad_records)
        if n_skipped and skipped is not None:
            skipped[name] = n_skipped
        for split in SPLITS:
            for i, drawing in enumerate(by_split[split]):
                yield split, f"{name}/{split}/{i}", drawing, label


def read_npz(path: Path, skip_bad_records: bool = False) -> tuple[dict[str, list[np.ndarray]], int]:
    """One Sketch-RNN category file: ``{split: [int16 [n, 3], ...]}`` and the number skipped."""
    try:  # np.load(allow_pickle=True) would unpickle a file that is not a zip archive
        with open(path, "rb") as handle:
            if not zipfile.is_zipfile(handle):
                raise UserError(f"{path} is not a readable .npz (truncated or corrupt?): not a zip archive")
    except OSError as exc:
        raise UserError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(name).stem: name for name in archive.namelist() if name.endswith(".npy")}
            missing = [s for s in SPLITS if s not in members]
            if missing:
                raise UserError(f"{path}: no {missing[0]!r} array (a Sketch-RNN .npz has train, valid and test)")
            raw = {}
            for split in SPLITS:
                with archive.open(members[split]) as member:
                    raw[split] = read_npy_restricted(member, path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise UserError(f"{path} is not a readable .npz (truncated or corrupt?): {exc}") from None
    out, skipped = {}, 0
    for split, items in raw.items():
        out[split] = []
        for i, item in enumerate(items):
            drawing = np.asarray(item)
            problem = _stroke3_problem(drawing)
            if problem:
                if not skip_bad_records:
                    raise UserError(f"{path} {split}[{i}]: {problem}")
                skipped += 1
                continue
            out[split].append(drawing.astype(np.int16))
    if not any(out.values()):
        raise UserError(f"{path} holds no drawings")
    return out, skipped


def _stroke3_problem(drawing: np.ndarray) -> str | None:
    """Why ``drawing`` is no stroke-3 array of finite numbers that fit int16, or None."""
    if (
        drawing.ndim != 2
        or drawing.shape[1] != 3
        or len(drawing) == 0
        or drawing.dtype.kind not in "iuf"
        or not np.isfinite(drawing).all()
    ):
        return f"expected stroke-3 rows of shape [n, 3] holding finite numbers, got {drawing.dtype} {drawing.shape}"
    try:
        check_int16(drawing)
    except ValueError as exc:
        return f"{exc} (stroke-3 offsets are stored as int16)"
    return None


#: The only globals a Sketch-RNN object array's pickle may name: numpy's array reconstruction.
ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any global outside ``ALLOWED_PICKLE_GLOBALS``
    (``posix.system``, ``builtins.eval``, ...) is refused before it is looked up."""

    def __init__(self, file, source: Path):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_PICKLE_GLOBALS:
            raise UserError(
                f"{self.source} is refused: its pickled arrays name the global {module}.{name}, "
                "which a Sketch-RNN .npz never needs (only numpy arrays are loaded)"
            )
        return super().find_class(module, name)


def read_npy_restricted(member, source: Path) -> np.ndarray:
    """One ``.npy`` member of an ``.npz``: plain arrays as numpy reads them, object arrays
    through ``ArrayUnpickler`` (numpy's own loader would run any pickle)."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.hasobject:
        array = ArrayUnpickler(member, source).load()
        if not isinstance(array, np.ndarray):
            raise ValueError(f"an object array was expected, got {type(array).__name__}")
        return array
    data = member.read()
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) < count * dtype.itemsize:
        raise ValueError(f"array data is truncated ({len(data)} of {count * dtype.itemsize} bytes)")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


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
        except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError, OverflowError) as exc:
            if not skip_bad_records:
                reason = (
                    "not JSON"
                    if isinstance(exc, json.JSONDecodeError)
                    else "no 'drawing'"
                    if isinstance(exc, KeyError)
                    else f"bad 'drawing' ({exc})"
                )
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


def _tfrecord_class_names(data_dir: Path) -> list[str]:
    class_files = sorted(data_dir.glob("*.classes"))
    if not class_files:
        raise UserError(f"{data_dir} has TFRecords but no *.classes file (one class name per line)")
    return [c.strip() for c in class_files[0].read_text().splitlines() if c.strip()]


def _iter_tfrecords(data_dir: Path, class_names: list[str], skip_bad_records: bool, skipped: dict | None):
    """Tutorial TFRecords, record by record; labels remapped to ``class_names`` (others dropped)."""
    import tensorflow as tf

    all_names = _tfrecord_class_names(data_dir)
    remap = {all_names.index(c): i for i, c in enumerate(class_names)}
    features = {
        "ink": tf.io.VarLenFeature(tf.float32),
        "shape": tf.io.FixedLenFeature([2], tf.int64),
        "class_index": tf.io.FixedLenFeature([1], tf.int64),
    }
    for prefix in ("training", "eval"):
        files = sorted(data_dir.glob(f"{prefix}.tfrecord-*"))
        if not files and prefix == "training":
            raise UserError(f"{data_dir} has no training.tfrecord-* files")
        for path in files:
            n_skipped = 0
            try:
                for index, serialized in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
                    try:
                        example = tf.io.parse_single_example(serialized, features)
                        shape = example["shape"].numpy()
                        ink = tf.sparse.to_dense(example["ink"]).numpy().reshape(shape)
                        label = int(example["class_index"].numpy()[0])
                        if shape[1] != 3 or not 0 <= label < len(all_names):
                            raise ValueError(f"shape {shape.tolist()}, class_index {label}")
                    except (tf.errors.OpError, ValueError) as exc:
                        if not skip_bad_records:
                            message = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
                            raise UserError(f"{path} record {index}: {first_line(message)}") from None
                        n_skipped += 1
                        continue
                    if label in remap:
                        split = "train" if prefix == "training" else ("valid" if index % 2 == 0 else "test")
                        yield split, f"{path.name}/{index}", ink.astype(np.float32), remap[label]
            except tf.errors.OpError as exc:
                raise UserError(f"{path} is not a readable TFRecord file (truncated?): {exc.message}") from None
            if n_skipped and skipped is not None:
                skipped[path.name] = n_skipped
