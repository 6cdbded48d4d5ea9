"""Issue #14, "Reliability, round two": what the bad-input table (tests/test_bad_input.py) cannot
show in one row: that a crafted pickle ran nothing, that good files still load, what is accepted
now (zoned dates, one value written two ways), Ctrl-C during training, the sockets of a local
Ray, and artifacts that say what they describe.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, copy_run, error_line, run_cli
from test_bad_input import _Command, _crafted_npz

from rnnforge.core import fileio
from rnnforge.core.errors import UserError
from rnnforge.pipeline import quickdraw, timeseries

SKETCHRNN = SHARED_DATA / "sketchrnn"


# --- 1: code in a data file never runs ----------------------------------------------------------


def test_a_crafted_pickle_runs_no_command(tmp_path):
    marker = tmp_path / "marker"
    args, crafted = _crafted_npz(tmp_path, _Command(f"touch {marker}"))
    result = run_cli(*args, "--run-dir", tmp_path / "run")
    line = error_line(result)
    assert result.returncode == 2
    assert str(crafted) in line and "posix.system" in line
    assert not marker.exists(), "the pickle's command ran"
    with pytest.raises(UserError, match="posix.system"):
        quickdraw.read_npz(crafted)
    assert not marker.exists()


def test_the_three_real_sketchrnn_files_load_as_numpy_reads_them():
    files = sorted(SKETCHRNN.glob("*.npz"))
    assert [f.name for f in files] == ["aaron_sheep.npz", "omniglot.npz", "short_kanji.npz"]
    for path in files:
        drawings, skipped = quickdraw.read_npz(path)
        assert skipped == 0
        with np.load(path, allow_pickle=True, encoding="latin1") as trusted:  # the published files
            for split in quickdraw.SPLITS:
                assert len(drawings[split]) == len(trusted[split]) > 0, (path, split)
                for ours, theirs in zip(drawings[split][:50], trusted[split][:50]):
                    assert ours.dtype == np.int16
                    np.testing.assert_array_equal(ours, theirs)


def test_plain_arrays_in_an_npz_are_read_without_pickle(tmp_path):
    path = tmp_path / "plain.npz"
    rows = np.array([[1, 2, 0], [3, -4, 1]], np.int16)
    np.savez(path, train=np.stack([rows, rows]), valid=rows[None], test=np.asfortranarray(rows)[None])
    drawings, _ = quickdraw.read_npz(path)
    np.testing.assert_array_equal(drawings["train"][1], rows)
    np.testing.assert_array_equal(drawings["test"][0], rows)


# --- 2, 3, 8: numbers, dates and values as a CSV writes them -------------------------------------


def _series(tmp_path: Path, text: str):
    path = tmp_path / "series.csv"
    path.write_text(text)
    return timeseries.read_daily_csv(path, "date", "value")


def test_zoned_dates_are_converted_to_utc_then_taken_as_dates(tmp_path):
    zulu = "date,value\n" + "".join(f"2020-01-{d:02d}T10:00:00Z,{d}\n" for d in range(1, 11))
    series = _series(tmp_path, zulu)
    assert series.index.tz is None and list(series.index.day) == list(range(1, 11))
    mixed = "date,value\n" + "".join(
        f"2020-01-{d:02d}T{'12:00:00+05:00' if d % 2 else '10:00:00Z'},{d}\n" for d in range(1, 10)
    )
    series = _series(tmp_path, mixed + "2020-01-11T02:00:00+05:00,99\n")  # 21:00 UTC on the 10th
    assert [str(day.date()) for day in series.index] == [f"2020-01-{d:02d}" for d in range(1, 11)]
    assert list(series) == [*range(1, 10), 99]


def test_one_value_written_two_ways_is_one_row(tmp_path):
    text = "date,value\n2020-01-01,1010\n2020-01-01,1010.0\n2020-01-02,1.01e3\n2020-01-02, 1010 \n2020-01-03,5\n"
    series = _series(tmp_path, text)
    assert list(series) == [1010.0, 1010.0, 5.0]


def test_the_largest_float32_value_is_accepted(tmp_path):
    top = float(np.finfo(np.float32).max)
    series = _series(tmp_path, f"date,value\n2020-01-01,{top!r}\n2020-01-02,1\n")
    assert np.isfinite(np.float32(series.iloc[0]))


def test_upper_case_npy_clips_are_read_as_arrays(tmp_path):
    from rnnforge.pipeline.video import read_clip

    path = tmp_path / "CLIP.NPY"
    with open(path, "wb") as handle:  # np.save would append ".npy" to the name
        np.save(handle, np.full((4, 8, 8, 3), 7, np.uint8))
    frames = read_clip(path)
    assert frames.shape == (4, 8, 8, 3) and frames.max() == 7


@pytest.mark.slow
def test_a_diverged_run_is_not_written_as_finished(tmp_path):
    import ray.train

    from rnnforge.cluster.finish import finish_run
    from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from rnnforge.core.run_dir import RunDir
    from rnnforge.models import get_spec
    from rnnforge.models.resolve import resolve_config

    config = resolve_config("forecast", {"epochs": 1})
    spec = get_spec("forecast")
    data = spec.load_data(config)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    spec.build_model(config, data.info).save(ckpt / CHECKPOINT_MODEL, save_format="keras_v3")
    entry = {"epoch": 1, "loss": float("nan"), "val_loss": float("inf"), "samples_per_s": 1.0}
    (ckpt / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 1, "history": [entry], "restarts": 0, "world_size": 1}))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(UserError, match=r"training diverged: epoch 1 ended with loss nan, val_loss inf"):
        finish_run(config, run, ray.train.Checkpoint.from_directory(ckpt), 1.0, data=data)
    assert list(run.path.iterdir()) == []  # no model.keras, config.json or plots


# --- 4 and 10: checks that need no data come first ------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--gpus-per-worker", "1"), "needs 2 GPUs; the Ray cluster has 0"),
        (("--run-dir", "/proc/rnnforge-run"), "--run-dir /proc/rnnforge-run cannot be created"),
    ],
    ids=["gpus_on_a_machine_without", "run_dir_in_proc"],
)
def test_a_check_that_needs_no_data_is_all_the_user_reads(tmp_path, extra, expected):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU for Ray or TensorFlow, whatever the machine
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "rnnforge.cli",
            "train",
            "sketch",
            "--run-dir",
            tmp_path / "r",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    seconds = time.monotonic() - started
    messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(messages) == 1 and messages[0].startswith("error: ") and expected in messages[0], messages
    assert not imported & {"tensorflow", "ray", "tf_keras", "tensorflow_datasets"}, "imported before the check"
    assert result.stdout == ""
    assert seconds < 15, seconds


def test_writability_probe_leaves_nothing_behind(tmp_path):
    before = sorted(tmp_path.iterdir())
    assert fileio.check_writable(tmp_path / "a" / "b", "--run-dir") == (tmp_path / "a" / "b")
    assert fileio.check_writable(tmp_path / "x.onnx", "--output", directory=False) == tmp_path / "x.onnx"
    assert sorted(tmp_path.iterdir()) == before


# --- 6: Ray Train's failures in one line ----------------------------------------------------------


def test_a_worker_failure_is_one_line_naming_the_worker_error():
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    from rnnforge.cluster.launch import failure_line

    failed = WorkerGroupError(
        "Traceback (most recent call last):\n  File ...\nValueError: bad shard",
        {1: ValueError("Traceback (most recent call last):\n  File 'x'\nValueError: bad shard")},
    )
    assert failure_line(failed) == "worker 1: ValueError: bad shard"
    assert failure_line(ControllerError(RuntimeError("placement group timed out"))).endswith(
        "placement group timed out"
    )


# --- 7: artifacts that say what they describe -----------------------------------------------------


def test_atomic_writes_fsync_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fileio.write_text(tmp_path / "a.txt", "hello")
    assert synced == ["file", "dir"]
    synced.clear()
    with fileio.atomic_path(tmp_path / "folder") as tmp:
        tmp.mkdir()
        (tmp / "one").write_text("1")
        (tmp / "two").write_text("2")
    assert synced.count("file") == 2 and synced.count("dir") >= 2


@pytest.mark.slow
def test_export_elsewhere_writes_its_parity_record_beside_the_model(exported_run, tmp_path):
    run = copy_run(exported_run, tmp_path / "run")
    before = hashlib.sha256((run / "parity.json").read_bytes()).hexdigest()
    other = tmp_path / "elsewhere" / "other.onnx"
    result = run_cli("export", "onnx", run, "--output", other)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((run / "parity.json").read_bytes()).hexdigest() == before
    record = json.loads((tmp_path / "elsewhere" / "other.parity.json").read_text())
    assert record["onnx_path"] == str(other)
    assert json.loads((run / "parity.json").read_text())["onnx_path"] != str(other)


def test_bench_says_when_named_model_comes_from_another_run(exported_run, tmp_path):
    import onnx

    run = copy_run(exported_run, tmp_path / "run")
    model = onnx.load(str(run / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "rnnforge.source_model_sha256":
            prop.value = "0" * 64
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    args = ("--batch-sizes", "1", "--runs", "10", "--warmup", "1", "--tf-baseline", "none")
    result = run_cli("bench", run, "--model", foreign, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "was exported from another run" in result.stdout
    report = (run / "bench" / "report.md").read_text()
    assert "model from another run" in report and str(foreign) in report
    assert "exported from another run" in json.loads((run / "bench" / "bench.json").read_text())["model_note"]


def test_a_copied_run_still_benches_its_own_export(exported_run):
    from rnnforge.core.run_dir import RunDir
    from rnnforge.export.bench import check_onnx_file, other_run

    meta, _ = check_onnx_file(exported_run / "model.onnx", "sketch")
    assert meta["rnnforge.source_model_sha256"] == fileio.sha256_file(exported_run / "model.keras")
    assert other_run(RunDir(exported_run), meta) is None


def test_batch_memory_is_bounded_and_the_error_says_why():
    from rnnforge.export.bench import check_batch_memory
    from rnnforge.export.settings import BenchSettings

    clips = np.zeros((2, 16, 64, 64, 3), np.uint8)  # 196,608 bytes per example
    check_batch_memory(clips, BenchSettings(batch_sizes=(1, 256)), memory=10**9)
    with pytest.raises(UserError, match=r"--batch-sizes 100000: its inputs alone need 19.7 GB"):
        check_batch_memory(clips, BenchSettings(batch_sizes=(1, 100_000)), memory=10**9)
    strokes = np.zeros((2, 100, 3), np.float32)
    with pytest.raises(UserError, match="--batch-sizes 1000"):  # at 10x the stored length
        check_batch_memory(strokes, BenchSettings(batch_sizes=(1000,), seq_lengths=(1000,)), memory=20_000_000)


def test_an_engine_that_crashes_is_one_line_and_leaves_no_result(exported_run, tmp_path, monkeypatch):
    from rnnforge.export import measure

    run = copy_run(exported_run, tmp_path / "sketch")
    # the timing process dies as ONNX Runtime 1.31 did on CUDA (the sketch fp16 model with --cuda-graph)
    monkeypatch.setattr(measure, "BOOTSTRAP", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    result = run_cli("bench", run, "--batch-sizes", "1", "--tf-baseline", "none")
    assert result.returncode == 7
    assert error_line(result).startswith(
        "error: the onnxruntime timing process died (signal SIGSEGV) on cpu before giving a result: "
        "a crash inside the engine, not your input"
    ), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (run / "bench" / "bench.json").exists()
