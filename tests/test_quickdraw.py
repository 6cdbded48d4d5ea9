"""Real QuickDraw strokes: the three public formats, the sketch_rnn TFDS builder, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SHARED_DATA, error_line, run_cli
from pipeline import quickdraw
from rnnforge.errors import UserError

SIMPLIFIED = SHARED_DATA / "quickdraw_simplified"
SKETCHRNN = SHARED_DATA / "sketchrnn"
needs_samples = pytest.mark.skipif(not SIMPLIFIED.is_dir(), reason="needs ../shared/data samples")


def write_npz(path, sizes=(6, 2, 2), seed=0):
    """A Sketch-RNN style .npz: object arrays of int16 stroke-3 drawings."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(quickdraw.SPLITS, sizes):
        items = np.empty(n, dtype=object)
        for i in range(n):
            d = rng.integers(-20, 20, size=(int(rng.integers(5, 30)), 3)).astype(np.int16)
            d[:, 2] = 0
            d[-1, 2] = 1
            items[i] = d
        arrays[split] = items
    np.savez(path, **arrays)
    return path


def write_ndjson(path, word, n=12):
    lines = []
    for i in range(n):
        xs = [10 + i, 40, 80, 120 - i]
        ys = [20, 60 + i, 30, 90]
        lines.append(json.dumps({"word": word, "key_id": f"{word}{i}", "recognized": True,
                                 "drawing": [[xs, ys], [[5, 9], [7, 3]]]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tfrecords(folder, class_names=("cat", "dog"), n=8, drop_feature=None):
    """Tutorial-format TFRecords: ink (flat float32), shape [n, 3], class_index, and a .classes file."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    (folder / "training.tfrecord.classes").write_text("\n".join(class_names) + "\n")
    for prefix in ("training", "eval"):
        with tf.io.TFRecordWriter(str(folder / f"{prefix}.tfrecord-00000-of-00001")) as writer:
            for i in range(n):
                ink = rng.normal(0, 0.1, size=(int(rng.integers(4, 20)), 3)).astype(np.float32)
                feature = {
                    "ink": tf.train.Feature(float_list=tf.train.FloatList(value=ink.ravel())),
                    "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(ink.shape))),
                    "class_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % len(class_names)])),
                }
                feature.pop(drop_feature, None)
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return folder


@needs_samples
def test_real_ndjson_samples_become_stroke3_with_stable_splits():
    drawings = quickdraw.load_local(SIMPLIFIED)
    assert drawings.format == "ndjson" and drawings.class_names[:3] == ["apple", "bicycle", "cat"]
    assert sum(len(d) for d, _ in drawings.splits.values()) == 250
    items, labels = drawings.splits["train"]
    assert all(d.dtype == np.int16 and d.shape[1] == 3 and d[-1, 2] == 1 for d in items)
    assert set(labels.tolist()) == set(range(10))
    again = quickdraw.load_local(SIMPLIFIED)
    assert all(np.array_equal(a, b) for a, b in zip(again.splits["test"][0], drawings.splits["test"][0]))
    assert quickdraw.ndjson_split("5260413706960896") == quickdraw.ndjson_split("5260413706960896")


@needs_samples
def test_real_sketchrnn_npz_files_are_three_classes():
    drawings = quickdraw.load_local(SKETCHRNN, max_per_class=100)
    assert drawings.class_names == ["aaron_sheep", "omniglot", "short_kanji"]
    items, labels = drawings.splits["train"]
    assert np.bincount(labels).tolist() == [100, 100, 100]
    assert len(drawings.splits["valid"][0]) == 300 + 1000 + 600
    assert items[0].dtype == np.int16


def test_tutorial_tfrecords(tmp_path):
    drawings = quickdraw.load_local(write_tfrecords(tmp_path))
    assert drawings.format == "tfrecord" and drawings.class_names == ["cat", "dog"]
    assert len(drawings.splits["train"][0]) == 8
    assert len(drawings.splits["valid"][0]) == 4 and len(drawings.splits["test"][0]) == 4
    assert drawings.splits["train"][0][0].shape[1] == 3
    only_dog = quickdraw.load_local(tmp_path, categories=["dog", "cat"])
    assert only_dog.class_names == ["dog", "cat"] and only_dog.splits["train"][1][0] == 1


@pytest.mark.parametrize("config, source", [("small", SIMPLIFIED), ("shared_sample", SKETCHRNN)])
@needs_samples
def test_tfds_load_builds_from_local_files(tmp_path, config, source):
    import tensorflow_datasets as tfds

    import pipeline  # noqa: F401  (registers sketch_rnn)

    ds, info = tfds.load(f"sketch_rnn/{config}", split="test", data_dir=tmp_path, with_info=True,
                         download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=source)})
    names = info.features["label"].names
    assert names == (list(quickdraw.load_local(source).class_names) if config == "small"
                     else ["aaron_sheep", "omniglot", "short_kanji"])
    example = next(iter(tfds.as_numpy(ds)))
    assert example["strokes"].ndim == 2 and example["strokes"].shape[1] == 3
    assert info.splits["test"].num_examples == len(quickdraw.load_local(source).splits["test"][0])


def test_tfds_load_builds_from_generated_npz(tmp_path):
    import tensorflow_datasets as tfds

    from pipeline.sketch_rnn import SketchRnnConfig

    manual = tmp_path / "manual"
    manual.mkdir()
    write_npz(manual / "cat.npz", seed=1)
    write_npz(manual / "dog.npz", seed=2)
    builder = tfds.builder("sketch_rnn", config=SketchRnnConfig(name="pets", categories=["cat", "dog"]),
                           data_dir=tmp_path / "tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    assert builder.info.splits["train"].num_examples == 12
    labels = sorted(int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split="valid")))
    assert labels == [0, 0, 1, 1]


def _truncated_npz(tmp_path):
    path = write_npz(tmp_path / "cat.npz")
    write_npz(tmp_path / "dog.npz")
    path.write_bytes(path.read_bytes()[:200])
    return path


def _bad_json(tmp_path):
    write_ndjson(tmp_path / "dog.ndjson", "dog")
    path = write_ndjson(tmp_path / "cat.ndjson", "cat")
    path.write_text(path.read_text() + "{not json\n")
    return path


def _no_drawing(tmp_path):
    write_ndjson(tmp_path / "dog.ndjson", "dog")
    path = write_ndjson(tmp_path / "cat.ndjson", "cat", n=3)
    path.write_text(path.read_text() + json.dumps({"word": "cat", "key_id": "x"}) + "\n")
    return path


def _empty_file(tmp_path):
    write_ndjson(tmp_path / "dog.ndjson", "dog")
    path = tmp_path / "cat.ndjson"
    path.write_text("")
    return path


def _missing_feature(tmp_path):
    write_tfrecords(tmp_path, drop_feature="ink")
    return tmp_path / "training.tfrecord-00000-of-00001"


@pytest.mark.parametrize(
    "make, extra, expected",
    [
        (_truncated_npz, [], "is not a readable .npz (truncated or corrupt?)"),
        (_bad_json, [], "line 13: not JSON"),
        (_no_drawing, [], "line 4: no 'drawing'"),
        (_empty_file, [], "holds no drawings"),
        (_missing_feature, [], "record 0: "),
        (lambda tmp: write_ndjson(tmp / "cat.ndjson", "cat") and tmp, ["--categories", "cat,zebra"],
         "category 'zebra' is not in"),
        (lambda tmp: write_ndjson(tmp / "cat.ndjson", "cat") and tmp, [], "has 1 category; a classifier needs at least 2"),
    ],
)
def test_bad_quickdraw_files_get_one_line(tmp_path, make, extra, expected):
    named = make(tmp_path)
    result = run_cli("train", "sketch", "--dataset", "quickdraw", "--data-dir", tmp_path, "--run-dir",
                     tmp_path / "run", *extra)
    line = error_line(result)
    assert expected in line
    assert str(named if named != tmp_path else tmp_path) in line or "category" in expected
    assert not (tmp_path / "run").exists()


def test_skip_bad_records_counts_them(tmp_path):
    _bad_json(tmp_path)
    drawings = quickdraw.load_local(tmp_path, skip_bad_records=True)
    assert drawings.skipped == {"cat": 1}
    assert sum(len(d) for d, _ in drawings.splits.values()) == 24
    with pytest.raises(UserError, match="line 13: not JSON"):
        quickdraw.load_local(tmp_path)


def test_mixed_formats_and_empty_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="holds no QuickDraw files"):
        quickdraw.load_local(tmp_path)
    write_ndjson(tmp_path / "cat.ndjson", "cat")
    write_npz(tmp_path / "dog.npz")
    with pytest.raises(UserError, match="mixes formats"):
        quickdraw.load_local(tmp_path)
    shutil.rmtree(tmp_path)
