"""The video task: synthetic clips, a folder of the user's clips, the CNN-RNN, export and bad clips."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import error_line, run_cli, run_cli_process

from rnnforge.models import get_spec
from rnnforge.models import video as models_video
from rnnforge.models.common import compile_model
from rnnforge.models.resolve import resolve_config
from rnnforge.pipeline import video


def test_synthetic_clips_are_deterministic_and_move():
    a, la = video.synthetic("test", seed=1, n=12)
    b, lb = video.synthetic("test", seed=1, n=12)
    assert a.shape == (12, 16, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert sorted(la.tolist()) == list(range(12))  # balanced: one clip per class
    assert not np.array_equal(a, video.synthetic("train", seed=1, n=12)[0])
    # The first and last frames differ where the shape moved.
    assert (np.abs(a[:, 0].astype(int) - a[:, -1].astype(int)).max(axis=(1, 2, 3)) > 100).all()


def write_folder(root, classes=("jump", "wave"), per_class=5, frames=20, size=40, fmt="npy"):
    """ROOT/<class>/<clip> with .npy or .mp4 clips."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            clip = rng.integers(0, 255, size=(frames, size, size, 3), dtype=np.uint8)
            if fmt == "npy":
                np.save(root / name / f"clip{i}.npy", clip)
            else:
                iio.imwrite(root / name / f"clip{i}.mp4", clip, fps=10, codec="libx264", macro_block_size=1)
    return root


def test_folder_of_npy_and_mp4_clips(tmp_path):
    write_folder(tmp_path / "npy")
    splits, names = video.load_folder(tmp_path / "npy", frames=8, size=32)
    assert names == ["jump", "wave"]
    assert sum(len(s[0]) for s in splits.values()) == 10
    assert splits["train"][0].shape[1:] == (8, 32, 32, 3) and splits["train"][0].dtype == np.uint8
    write_folder(tmp_path / "mp4", per_class=2, fmt="mp4")
    splits, _ = video.load_folder(tmp_path / "mp4", frames=16, size=40)
    assert sum(len(s[0]) for s in splits.values()) == 4


def test_train_test_level_is_respected(tmp_path):
    write_folder(tmp_path / "train", per_class=4)
    write_folder(tmp_path / "test", per_class=2)
    splits, _ = video.load_folder(tmp_path, frames=8, size=40)
    assert len(splits["test"][0]) == 4 and len(splits["train"][0]) + len(splits["valid"][0]) == 8


def test_uniform_frame_sampling():
    frames = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    picked = video.sample_frames(frames, 5, 4, "clip")
    assert picked[:, 0, 0, 0].tolist() == [0, 5, 10, 14, 19]
    run = video.sample_frames(frames, 5, 4, "clip", "random", np.random.default_rng(3))[:, 0, 0, 0]
    assert np.all(np.diff(run) == 1)


def _fewer_frames(tmp):
    write_folder(tmp)
    np.save(tmp / "jump" / "short.npy", np.zeros((3, 40, 40, 3), np.uint8))
    return tmp / "jump" / "short.npy", "has 3 frames, fewer than --frames 16"


def _undecodable(tmp):
    write_folder(tmp)
    (tmp / "wave" / "broken.mp4").write_bytes(b"\x00\x00\x00 not a video")
    return tmp / "wave" / "broken.mp4", "cannot be decoded as video"


def _mixed_sizes(tmp):
    write_folder(tmp)
    frames = np.empty(2, dtype=object)
    frames[0], frames[1] = np.zeros((40, 40, 3), np.uint8), np.zeros((30, 30, 3), np.uint8)
    np.save(tmp / "wave" / "mixed.npy", frames, allow_pickle=True)
    return tmp / "wave" / "mixed.npy", "is not a readable .npy array (frames of mixed sizes"


def _empty_class(tmp):
    write_folder(tmp)
    (tmp / "sit").mkdir()
    return tmp / "sit", "holds no clips"


def _single_class(tmp):
    write_folder(tmp, classes=("jump",))
    return tmp, "has 1 class folder(s); a classifier needs at least 2"


@pytest.mark.parametrize("make", [_fewer_frames, _undecodable, _mixed_sizes, _empty_class, _single_class])
def test_bad_clips_get_one_line(tmp_path, make):
    named, expected = make(tmp_path / "clips")
    line = error_line(
        run_cli(
            "train", "video", "--dataset", "folder", "--data-dir", tmp_path / "clips", "--run-dir", tmp_path / "run"
        )
    )
    assert expected in line and str(named) in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_model_trains_and_takes_uint8_frames(video_run):
    from tensorflow import keras

    model = keras.models.load_model(video_run / "model.keras")
    assert model.input.dtype == "uint8" and model.input_shape == (None, 8, 32, 32, 3)
    config = resolve_config("video", {"frames": 8, "frame_size": 32})
    spec = get_spec("video")
    fresh = spec.build_model(config, {"class_names": list(video.CLASS_NAMES), "frames": 8, "frame_size": 32})
    compile_model(fresh, spec, config, total_steps=4)
    clips, labels = video.synthetic("train", frames=8, size=32, n=8)
    assert np.isfinite(fresh.train_on_batch(clips, labels)[0])
    assert fresh.predict(clips, verbose=0).shape == (8, 12)


@pytest.mark.slow
def test_video_export_has_no_loop_and_keeps_parity(video_run):
    model = onnx.load(str(video_run / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "Scan"} and "LSTM" in ops and "Conv" in ops
    (inp,) = model.graph.input
    assert inp.name == "frames" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    parity = json.loads((video_run / "parity.json").read_text())
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_folder_dataset_end_to_end_from_the_cli(tmp_path, ray_head):
    """A user's folder of .npy and .mp4 clips: train on Ray (the shared head, conftest's
    ``ray_head``), export, bench."""
    head, env = ray_head
    write_folder(tmp_path / "clips", per_class=8, frames=12, size=32, fmt="npy")
    write_folder(tmp_path / "clips", classes=("jump", "wave"), per_class=3, frames=12, size=32, fmt="mp4")
    run_dir = tmp_path / "run"
    result = run_cli_process(
        "train",
        "video",
        "--dataset",
        "folder",
        "--data-dir",
        tmp_path / "clips",
        "--frames",
        "8",
        "--frame-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--address",
        head.gcs,
        "--run-dir",
        run_dir,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["info"]["class_names"] == ["jump", "wave"] and config["info"]["source"] == "folder"
    assert sum(config["num_examples"].values()) == 22
    assert run_cli("export", "onnx", run_dir).returncode == 0
    bench = run_cli("bench", run_dir, "--batch-sizes", "1,2", "--warmup", "1", "--runs", "10", "--max-seconds", "0.2")
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert json.loads((run_dir / "bench" / "bench.json").read_text())["accuracy"]["agreement"]["top1_agreement"] == 1.0


# Issue 22: the hard synthetic variant, clip augmentation and the folder's statistics.


def test_hard_clips_show_characters_and_test_on_an_unseen_cast():
    clips, labels = video.synthetic("test", seed=2, frames=8, n=40, difficulty="hard")
    again, _ = video.synthetic("test", seed=2, frames=8, n=40, difficulty="hard")
    assert clips.shape == (40, 8, 64, 64, 3) and clips.dtype == np.uint8
    np.testing.assert_array_equal(clips, again)
    assert len(video.HARD_CLASS_NAMES) == 20 and sorted(labels.tolist()) == sorted(list(range(20)) * 2)
    assert video.HARD_SPLIT_SIZES["train"] // 20 == 50  # few clips per class
    # The test cast wears textures and proportions no training character wears.
    train_cast = [video.character("train", np.random.default_rng(i)) for i in range(50)]
    test_cast = [video.character("test", np.random.default_rng(i)) for i in range(50)]
    assert not {c["texture"] for c in train_cast} & {c["texture"] for c in test_cast}
    assert max(c["width"] for c in train_cast) <= min(c["width"] for c in test_cast)


def test_mirrors_relabel_left_and_right_only():
    names = video.HARD_CLASS_NAMES
    flips = video.flip_classes("hard")
    assert names[flips[names.index("walk_left")]] == "walk_right"
    assert names[flips[names.index("punch_right")]] == "punch_left"
    assert names[flips[names.index("jump_up")]] == "jump_up"
    easy = video.flip_classes("easy")
    assert video.CLASS_NAMES[easy[video.CLASS_NAMES.index("circle_left")]] == "circle_right"


def test_augmenter_keeps_clips_uint8_and_relabels_mirrored_ones():
    """Bright left half, dark right half: a mirrored clip has its bright half on the right, and
    only those clips change label (class 0 <-> 1 here)."""
    import tensorflow as tf

    clip = np.zeros((4, 32, 32, 3), np.uint8)
    clip[:, :, :16] = 200
    augment = video.clip_augmenter(flips=(1, 0, 2))
    tf.random.set_seed(0)
    mirrored = 0
    for _ in range(40):
        out, label = augment(tf.constant(clip), tf.constant(0, tf.int64))
        out = out.numpy()
        assert out.shape == clip.shape and out.dtype == np.uint8
        flipped = out[:, :, 16:].mean() > out[:, :, :16].mean()
        assert int(label) == (1 if flipped else 0)
        mirrored += flipped
    assert 5 < mirrored < 35
    unflipped = video.clip_augmenter(flips=None)
    for _ in range(10):
        out, label = unflipped(tf.constant(clip), tf.constant(2, tf.int64))
        assert int(label) == 2 and out.numpy()[:, :, :12].mean() > out.numpy()[:, :, 20:].mean()


@pytest.mark.slow
def test_augmentation_switch_and_its_default_per_dataset():
    spec = get_spec("video")
    small = {"frames": 4, "frame_size": 16}
    easy = spec.load_data(resolve_config("video", small))
    assert easy.train_stream is None and easy.info["augment"] is False
    on = spec.load_data(resolve_config("video", {**small, "augment": True}))
    assert on.info["augment"] is True and on.info["mirrors"] == "relabelled" and on.num_examples("train") == 2400
    import tensorflow as tf

    x, y = next(iter(on.train_stream(tf.distribute.InputContext(2, 1), 8, 0)))
    assert x.shape == (8, 4, 16, 16, 3) and x.dtype == tf.uint8 and y.shape == (8,)
    hard = resolve_config("video", {**small, "difficulty": "hard"})
    assert models_video.AUGMENT_BY_DEFAULT["synthetic/hard"] and models_video.AUGMENT_BY_DEFAULT["folder"]
    off = spec.load_data(replace(hard, augment=False))
    assert off.train_stream is None and off.info["class_names"] == list(video.HARD_CLASS_NAMES)


def test_folder_reports_balance_and_clip_lengths(tmp_path, capsys):
    write_folder(tmp_path / "clips", per_class=3, frames=12)
    write_folder(tmp_path / "clips", classes=("jump",), per_class=5, frames=20)  # 5 jump clips: 3 overwritten
    video.load_folder(tmp_path / "clips", frames=8, size=32)
    line = capsys.readouterr().out.strip()
    assert line == (
        f"{tmp_path / 'clips'}: 2 classes, clips per class 3 (wave) to 5 (jump), mean 4.0; "
        "frames per clip 12 to 20, median 20"
    )


@pytest.mark.slow
def test_frames_above_the_shortest_clip_are_refused_naming_it(tmp_path):
    write_folder(tmp_path / "clips", per_class=3, frames=12)
    np.save(tmp_path / "clips" / "wave" / "short.npy", np.zeros((6, 40, 40, 3), np.uint8))
    np.save(tmp_path / "clips" / "jump" / "shorter.npy", np.zeros((5, 40, 40, 3), np.uint8))
    line = error_line(
        run_cli("train", "video", "--dataset", "folder", "--data-dir", tmp_path / "clips", "--frames", "8")
    )
    assert line == (
        f"error: {tmp_path / 'clips' / 'jump' / 'shorter.npy'} has 5 frames, fewer than --frames 8 "
        "(the shortest of 2 clip(s) below 8 frames; lower --frames or remove them)"
    )
