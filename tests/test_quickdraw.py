"""Real QuickDraw strokes: the three public formats, the sketch_rnn TFDS builder, bad files."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, error_line, noise, own_lines, run_cli, run_cli_process
from ray_cluster import output_of, process_tree, start_cli, stop

from rnnforge.core.errors import UserError
from rnnforge.pipeline import quickdraw

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
        lines.append(
            json.dumps(
                {"word": word, "key_id": f"{word}{i}", "recognized": True, "drawing": [[xs, ys], [[5, 9], [7, 3]]]}
            )
        )
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
@pytest.mark.slow
def test_tfds_load_builds_from_local_files(tmp_path, config, source):
    import tensorflow_datasets as tfds

    import rnnforge.pipeline.sketch_rnn  # noqa: F401  (registers sketch_rnn)

    ds, info = tfds.load(
        f"sketch_rnn/{config}",
        split="test",
        data_dir=tmp_path,
        with_info=True,
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=source)},
    )
    names = info.features["label"].names
    assert names == (
        list(quickdraw.load_local(source).class_names)
        if config == "small"
        else ["aaron_sheep", "omniglot", "short_kanji"]
    )
    example = next(iter(tfds.as_numpy(ds)))
    assert example["strokes"].ndim == 2 and example["strokes"].shape[1] == 3
    assert info.splits["test"].num_examples == len(quickdraw.load_local(source).splits["test"][0])


def test_tfds_load_builds_from_generated_npz(tmp_path):
    import tensorflow_datasets as tfds

    from rnnforge.pipeline.sketch_rnn import SketchRnnConfig

    manual = tmp_path / "manual"
    manual.mkdir()
    write_npz(manual / "cat.npz", seed=1)
    write_npz(manual / "dog.npz", seed=2)
    builder = tfds.builder(
        "sketch_rnn", config=SketchRnnConfig(name="pets", categories=["cat", "dog"]), data_dir=tmp_path / "tfds"
    )
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
        (
            lambda tmp: write_ndjson(tmp / "cat.ndjson", "cat") and tmp,
            ["--categories", "cat,zebra"],
            "category 'zebra' is not in",
        ),
        (
            lambda tmp: write_ndjson(tmp / "cat.ndjson", "cat") and tmp,
            [],
            "has 1 category; a classifier needs at least 2",
        ),
    ],
)
def test_bad_quickdraw_files_get_one_line(tmp_path, make, extra, expected):
    named = make(tmp_path)
    result = run_cli(
        "train", "sketch", "--dataset", "quickdraw", "--data-dir", tmp_path, "--run-dir", tmp_path / "run", *extra
    )
    line = error_line(result)
    assert expected in line
    assert str(named) in line  # the bad file, or the folder for the category errors
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


def test_large_config_has_all_345_categories():
    import tensorflow_datasets as tfds

    from rnnforge.pipeline.sketch_rnn import LARGE_CATEGORIES

    builder = tfds.builder("sketch_rnn/large")
    names = builder.info.features["label"].names
    assert len(names) == 345 == len(set(names)) and names == list(LARGE_CATEGORIES)
    assert {"cat", "aircraft carrier", "The Eiffel Tower", "zigzag"} <= set(names)


def test_bucketed_batches_left_pad_each_drawing_to_its_bucket():
    import tensorflow as tf

    from rnnforge.pipeline.input import bucket_lengths, bucketed_batches

    sequences = [np.full((n, 3), n, np.float32) for n in range(1, 61)]  # drawing n has n rows of value n
    ds = tf.data.Dataset.from_generator(
        lambda: ((s, len(s)) for s in sequences),
        output_signature=(tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((), tf.int64)),
    )
    assert bucket_lengths(40) == (10, 20, 30, 40)
    seen = set()
    for x, y in tfds_numpy(bucketed_batches(ds, batch_size=4, max_len=40).take(30)):
        assert x.shape[0] == 4 and x.shape[1] in (10, 20, 30, 40)
        for rows, n in zip(x, y):
            kept = min(n, 40)  # longer drawings are cropped to max_len
            bucket = next(b for b in (10, 20, 30, 40) if kept <= b)
            assert x.shape[1] == bucket, (n, x.shape)
            assert (rows[: bucket - kept] == 0).all() and (rows[bucket - kept :] == n).all()
            seen.add(int(n))
    assert seen == set(range(1, 61))  # every drawing reached a batch


def tfds_numpy(ds):
    import tensorflow_datasets as tfds

    return tfds.as_numpy(ds)


def test_streamed_shards_are_disjoint_and_cover_the_split(tmp_path):
    import tensorflow as tf

    from rnnforge.pipeline import sketch_rnn

    manual = tmp_path / "manual"
    manual.mkdir()
    write_npz(manual / "cat.npz", sizes=(30, 4, 4), seed=1)
    write_npz(manual / "dog.npz", sizes=(30, 4, 4), seed=2)
    builder = sketch_rnn.prepare(None, str(manual), str(tmp_path / "tfds"), max_per_class=25)
    assert builder.info.splits["train"].num_examples == 50 and builder.info.features["label"].names == ["cat", "dog"]
    assert sketch_rnn.prepare(None, str(manual), str(tmp_path / "tfds")).info.full_name != builder.info.full_name

    def drawings(ds):
        return sorted(strokes.tobytes() + bytes([label]) for strokes, label in tfds_numpy(ds))

    everything = drawings(sketch_rnn.stream_split(builder, "train", shuffle=False))
    shards = [
        drawings(
            sketch_rnn.stream_split(
                builder,
                "train",
                shuffle=False,
                input_context=tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i),
            )
        )
        for i in range(2)
    ]
    assert len(everything) == 50 and len(shards[0]) == len(shards[1]) == 25
    assert sorted(shards[0] + shards[1]) == everything


def test_streaming_quickdraw_task_data(tmp_path):
    import tensorflow as tf

    from rnnforge.models import get_spec
    from rnnforge.models.resolve import resolve_config

    manual = tmp_path / "manual"
    manual.mkdir()
    write_npz(manual / "cat.npz", sizes=(40, 5, 6), seed=1)
    write_npz(manual / "dog.npz", sizes=(40, 5, 6), seed=2)
    config = resolve_config(
        "sketch",
        {
            "dataset": "quickdraw",
            "data_dir": str(manual),
            "streaming": True,
            "tfds_dir": str(tmp_path / "tfds"),
            "max_len": 20,
        },
    )
    data = get_spec("sketch").load_data(config)
    assert data.num_examples("train") == 80 and data.num_examples("valid") == 10 and data.num_examples("test") == 12
    assert data.splits["valid"][0].shape == (10, 20, 3) and data.info["streaming"] is True
    assert data.info["class_names"] == ["cat", "dog"] and data.info["delta_scale"] > 0
    x, y = next(iter(data.train_stream(tf.distribute.InputContext(2, 1), 8, 0)))
    assert x.shape[0] == 8 and x.shape[1] in (5, 10, 15, 20) and set(y.numpy()) <= {0, 1}


@pytest.mark.slow
@needs_samples
def test_streaming_training_on_the_sketchrnn_sample_exports(tmp_path, ray_head):
    """On the shared Ray head (conftest's ``ray_head``): the point is the streaming input, not Ray's start."""
    head, env = ray_head
    run_dir = tmp_path / "qd"
    result = run_cli_process(
        "train",
        "sketch",
        "--dataset",
        "quickdraw",
        "--data-dir",
        SKETCHRNN,
        "--streaming",
        "--tfds-dir",
        tmp_path / "tfds",
        "--max-per-class",
        "600",
        "--max-len",
        "60",
        "--units",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "4",
        "--workers",
        "2",
        "--address",
        head.gcs,
        "--run-dir",
        run_dir,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the build from local files prints nothing of TFDS's or TensorFlow's (--verbose shows it)
    assert not noise(result.stderr) and "Generating" not in result.stderr, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["info"]["streaming"] is True and config["num_examples"]["train"] == 1800
    assert metrics["workers"] == 2 and metrics["samples_per_s"] > 0 and metrics["samples_per_s_per_worker"] > 0
    assert metrics["test"]["accuracy"] > 0.6  # 3 very different classes (chance 0.33)
    exported = run_cli("export", "onnx", run_dir)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (run_dir / "model.onnx").is_file()


@pytest.mark.slow
@needs_samples
def test_a_ray_train_failure_is_one_line_naming_the_worker_error(tmp_path, ray_head):
    """The data vanishes after the driver's check: the worker's UserError fails the run, and
    ``fit()`` raises Ray Train's ``TrainingFailedError``: one line, exit 1, no traceback of ours.
    On the shared Ray head: the point is the failure's path back to the console."""
    head, env = ray_head
    data = Path(shutil.copytree(SIMPLIFIED, tmp_path / "data"))
    args = ["sketch", "--dataset", "quickdraw", "--data-dir", data, "--workers", "1", "--epochs", "1"]
    proc = start_cli(
        "train", *args, "--max-failures", "0", "--address", head.gcs, "--run-dir", tmp_path / "run", env=env
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if " examples" in output_of(proc):  # the driver has checked the data; Ray Train starts next
                shutil.rmtree(data)
                break
            time.sleep(0.1)
        code = proc.wait(300)
    finally:
        stop(process_tree(proc.pid))
    output = output_of(proc)
    ours = [line for line in own_lines(output) if line.strip()]
    assert code == 1, output[-3000:]
    assert ours[-1] == f"error: training failed: worker 0: --data-dir {data} is not a directory " + (
        "(expected QuickDraw .npz, .ndjson or TFRecord files)"
    ), output[-3000:]
    assert sum(line.startswith("error: ") for line in ours) == 1
    assert not any("Traceback" in line for line in ours), output[-3000:]
