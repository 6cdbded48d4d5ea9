"""Bad input, systematically: one row per case, run through the CLI as a user calls it.

Each case writes its bad file(s) into ``tmp_path`` (or a copy of a finished run), runs
``rnnforge ...`` (in this process, as ``rnnforge.cli.main``) and checks what the user gets: exit
code 2 (bad input), a last stderr line ``error: ...`` that names the file/option and what was
expected, no Python traceback, and not one file created, changed or removed (a snapshot of paths,
sizes, mtimes and hashes before and after). Every case fails before Ray or TensorFlow starts;
``gpus_more_than_available`` runs in a fresh process, as a user's command does.

``INTERRUPTS`` (slow) is the Ctrl-C table: SIGINT during a real local train, to the process group
or the driver alone, ends with exit 130 and one line saying where the run resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, copy_run, own_lines, rewrite_eval_set, run_cli, run_cli_process, snapshot

import rnnforge.cli
from rnnforge.core.errors import UserError

OPTION_ONLY = None  # the case names an option, not a file: its expected text says which
SAMPLES = SHARED_DATA / "quickdraw_simplified"  # real QuickDraw ndjson files (../shared/data)


# --- writers of (bad) files ------------------------------------------------------------------


def _drawings(n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """An object array of n stroke-3 drawings, as a Sketch-RNN .npz holds them."""
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = rows if rows is not None else np.array([[3, 4, 0], [-2, 1, 0], [5, 0, 1]], np.int16)
    return out


def _npz(path: Path, rows: np.ndarray | None = None, keys=("train", "valid", "test")) -> Path:
    np.savez(path, **{k: _drawings(4 if k == "train" else 2, rows) for k in keys})
    return path


def _npz_folder(tmp: Path, bad: Callable[[Path], Path]) -> tuple[Path, Path]:
    """dog.npz is good, cat.npz is made by ``bad``; returns (folder, cat.npz)."""
    folder = tmp / "sketchrnn"
    folder.mkdir()
    _npz(folder / "dog.npz")
    return folder, bad(folder / "cat.npz")


def _ndjson_line(word: str, i: int) -> str:
    return json.dumps(
        {"word": word, "key_id": f"{word}{i}", "drawing": [[[0, 10, 20], [0, 15, 5]], [[30, 40], [30, 60]]]}
    )


def _ndjson_folder(tmp: Path, cat_text: str | bytes) -> tuple[Path, Path]:
    folder = tmp / "simplified"
    folder.mkdir()
    (folder / "dog.ndjson").write_text("".join(_ndjson_line("dog", i) + "\n" for i in range(10)))
    cat = folder / "cat.ndjson"
    cat.write_bytes(cat_text if isinstance(cat_text, bytes) else cat_text.encode())
    return folder, cat


def _quickdraw(folder: Path, *extra) -> list:
    return ["train", "sketch", "--dataset", "quickdraw", "--data-dir", folder, *extra]


GOOD_CSV = "date,value\n" + "".join(f"2020-01-{d:02d},{100 + d}\n" for d in range(1, 29))


def _csv_case(text: str | bytes, *extra) -> Callable:
    def setup(tmp: Path, runs: Runs):
        path = tmp / "series.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", "forecast", "--dataset", "csv", "--data-dir", path, *extra], path

    return setup


def _clips(tmp: Path, bad_name: str, bad: np.ndarray | bytes) -> tuple[Path, Path]:
    """ROOT/{jump,wave}/<clip>.npy, good uint8 clips plus one bad file in wave/."""
    root = tmp / "clips"
    for name in ("jump", "wave"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            np.save(root / name / f"{i}.npy", np.zeros((16, 24, 24, 3), np.uint8))
    path = root / "wave" / bad_name
    if isinstance(bad, bytes):
        path.write_bytes(bad)
    else:
        np.save(path, bad)
    return root, path


def _video(root: Path) -> list:
    return ["train", "video", "--dataset", "folder", "--data-dir", root]


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- run dirs ---------------------------------------------------------------------------------


class Runs:
    """Finished runs for export/bench cases: shared ones (read-only, snapshotted) and copies."""

    def __init__(self, request, tmp: Path):
        self.request, self.tmp = request, tmp
        self.shared: list[Path] = []

    def shared_run(self, name: str = "exported_run") -> Path:
        path = self.request.getfixturevalue(name)
        self.shared.append(path)
        return path

    def copy(self, name: str = "exported_run", to: str = "run") -> Path:
        return copy_run(self.request.getfixturevalue(name), self.tmp / to)


def _run_copy(edit: Callable[[Path], Path | None], *args) -> Callable:
    """A copy of the exported sketch run, damaged by ``edit``; ``args`` follow ``rnnforge``."""

    def setup(tmp: Path, runs: Runs):
        run = runs.copy()
        named = edit(run)  # the damaged file, or OPTION_ONLY
        return [a(run) if callable(a) else a for a in args], named

    return setup


def _failed_run(run: Path) -> Path:
    """What an interrupted 'rnnforge train' leaves: checkpoints, no config.json or model."""
    for name in ("config.json", "model.keras", "model.onnx", "parity.json", "metrics.json"):
        (run / name).unlink()
    (run / "checkpoints" / "train").mkdir(parents=True)
    (run / "checkpoints" / "train" / ".validate_storage_marker").write_text("")
    return run / "config.json"


def _set_meta(key: str, value: str) -> Callable:
    def edit(model):
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = value
        return model

    return edit


def _identity_model(_):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph)


def _dangling_input_model(_):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["undefined"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph)


def _bench_model(make: Callable[[Path, Path, Runs], Path]) -> Callable:
    """``rnnforge bench SHARED_RUN --model FILE``, FILE written into tmp by ``make(FILE, RUN, runs)``."""

    def setup(tmp: Path, runs: Runs):
        run = runs.shared_run()
        model = make(tmp / "model.onnx", run, runs)
        return ["bench", run, "--model", model, "--batch-sizes", "1", "--runs", "10"], model

    return setup


def _forecast_onnx(path: Path, run: Path, runs: Runs) -> Path:
    """A real export of the forecast task."""
    return Path(shutil.copy(runs.shared_run("forecast_run") / "model.onnx", path))


def _not_onnx(path: Path, run: Path, runs: Runs) -> Path:
    path.write_text("<html>not a model</html>")
    return path


def _edited_onnx(edit: Callable) -> Callable:
    """The shared run's model.onnx changed by ``edit(ModelProto) -> ModelProto``."""

    def make(path: Path, run: Path, runs: Runs) -> Path:
        import onnx

        onnx.save(edit(onnx.load(str(run / "model.onnx"))), str(path))
        return path

    return make


def _remove(name: str) -> Callable:
    def edit(run: Path) -> Path:
        (run / name).unlink()
        return run / name

    return edit


def _replace(name: str, data: bytes) -> Callable:
    def edit(run: Path) -> Path:
        (run / name).write_bytes(data)
        return run / name

    return edit


def _run_dir_is_a_file(tmp: Path, runs: Runs):
    (tmp / "f").write_text("x")
    return ["train", "sketch", "--run-dir", tmp / "f"], tmp / "f"


def _options(*args) -> Callable:
    """Train options only: the case names the option (no file)."""

    def setup(tmp: Path, runs: Runs):
        return [a.replace("{tmp}", str(tmp)) if isinstance(a, str) else a for a in args] + [
            "--run-dir",
            tmp / "run",
        ], OPTION_ONLY

    return setup


# --- writers for the reliability cases (issue #14) ---------------------------------------------


class _Command:
    """Pickled as ``posix.system(COMMAND)``: what a crafted .npz's object array would run."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Global:
    """Pickled as a call of ``func`` (any global but numpy's array reconstruction)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _crafted_npz(tmp: Path, payload) -> tuple[list, Path]:
    """sketchrnn/{dog,cat}.npz; cat.npz's train array holds ``payload`` beside a real drawing."""

    def write(path: Path) -> Path:
        train = _drawings(4)
        train[1] = payload
        np.savez(path, train=train, valid=_drawings(2), test=_drawings(2))
        return path

    folder, cat = _npz_folder(tmp, write)
    return _quickdraw(folder), cat


def _ndjson_drawing(drawing: str) -> str:
    return '{"key_id": "1", "drawing": ' + drawing + "}\n"


def _bench_json(path: Path, rows: list, task: str = "sketch") -> Path:
    """A minimal bench.json (schema 3) holding ``rows`` as its latency rows."""
    data = {
        "schema_version": 3,
        "task": task,
        "provider": {"session_providers": ["CPUExecutionProvider"]},
        "latency": rows,
    }
    path.write_text(json.dumps(data))
    return path


def _latency_row(batch: int = 1, engine: str = "onnxruntime") -> dict:
    figures = {"p50": 1.0, "p90": 1.1, "p95": 1.2, "p99": 1.3, "mean": 1.05}
    return {"engine": engine, "batch_size": batch, "latency_ms": figures, "throughput_per_s": 950.0}


def _compare(a_rows: list, b_rows: list, *extra, bad: str = "b") -> Callable:
    """``bench compare A B EXTRA``; the named file is ``bad`` (a or b), or OPTION_ONLY for None."""

    def setup(tmp: Path, runs: Runs):
        a = _bench_json(tmp / "a.json", a_rows)
        b = _bench_json(tmp / "b.json", b_rows)
        named = {"a": a, "b": b}.get(bad, OPTION_ONLY)
        return ["bench", "compare", a, b, *extra], named

    return setup


def _set_run_meta(key: str, value: str) -> Callable:
    """Edit of a run copy: its model.onnx's metadata ``key`` set to ``value``."""

    def edit(run: Path) -> Path:
        import onnx

        model = _set_meta(key, value)(onnx.load(str(run / "model.onnx")))
        onnx.save(model, str(run / "model.onnx"))
        return run / "model.onnx"

    return edit


def _make_file(name: str) -> Callable:
    """Edit of a run copy: RUN/``name`` is a file where a folder must go."""

    def edit(run: Path) -> Path:
        (run / name).write_text("not a folder")
        return run / name

    return edit


UNWRITABLE = Path("/proc/rnnforge-cannot-write-here")


# --- the table --------------------------------------------------------------------------------
# (id, setup(tmp, runs) -> (args, named path or None), expected substrings of the error line, exit code)

# issue #18: files for the day-type rows
_DAY_TYPE_CSV = "date,value,kind\n" + "".join(
    f"2020-01-{d:02d},{100 + d},{'A' if d % 7 in (4, 5) else 'W'}\n" for d in range(1, 29)
)
_DAY_TYPE_OPTIONS = ("--day-type-column", "kind", "--train-start", "2020-01-01", "--train-end", "2020-01-20")


# issue #27: files for the rows of options that do not apply, ranges and secrets
SECRET = "s3cr3tPa55"  # in the credentials of some rows: it must appear in no output and no file
_MANY_CODES_CSV = "date,value,kind\n" + "".join(f"2020-01-{d:02d},{100 + d},c{d}\n" for d in range(1, 29))


def _holidays_case(holidays: str | bytes, *extra, named: bool = True) -> Callable:
    """The good CSV with ``--holidays FILE`` (FILE holding ``holidays``): FILE is the named one,
    or (``named=False``) the error names options only."""

    def setup(tmp: Path, runs: Runs):
        path = tmp / "holidays.txt"
        path.write_bytes(holidays if isinstance(holidays, bytes) else holidays.encode())
        return [*_csv_case(GOOD_CSV)(tmp, runs)[0], "--holidays", path, *extra], path if named else OPTION_ONLY

    return setup


def _tracking_env(uri: str, run_id: str) -> Callable:
    """``export onnx RUN --mlflow-run-id RUN_ID`` with ``MLFLOW_TRACKING_URI`` (``{tmp}``: tmp_path) set."""

    def setup(tmp: Path, runs: Runs):
        runs.request.getfixturevalue("monkeypatch").setenv("MLFLOW_TRACKING_URI", uri.replace("{tmp}", str(tmp)))
        return ["export", "onnx", runs.copy(), "--mlflow-run-id", run_id], OPTION_ONLY

    return setup


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _forecast_code(run: Path, code: int) -> Path:
    """The forecast run's eval.npz with one past day-type code set to ``code``."""
    with np.load(run / "eval.npz") as data:
        arrays = dict(data)
    arrays["x.past_day_type"][0, 0] = code
    np.savez_compressed(run / "eval.npz", **arrays)
    return run


# issue #27, 1-3: the run dir as a checked contract (core/run_files.py): tampered copies of a run
BENCH_FAST = ("--batch-sizes", "1", "--runs", "10", "--warmup", "0", "--max-seconds", "0.1")


def _tampered(edit: Callable[[Path], Path | None], *args, fixture: str = "exported_run") -> Callable:
    """A copy of an exported run (``fixture``: the sketch run, or ``forecast_run``) damaged by
    ``edit(run) -> the damaged file``; ``args`` follow ``rnnforge`` (a callable gets the run)."""

    def setup(tmp: Path, runs: Runs):
        run = runs.copy(fixture, to="forecast" if fixture == "forecast_run" else "run")
        named = edit(run)
        return [a(run) if callable(a) else a for a in args], named

    return setup


def _bench_tampered(edit: Callable[[Path], Path | None], *extra, fixture: str = "exported_run") -> Callable:
    """``rnnforge bench RUN --batch-sizes 1 ...`` on a tampered copy (``_tampered``)."""
    return _tampered(edit, "bench", lambda run: run, *BENCH_FAST, *extra, fixture=fixture)


def _eval_edit(edit: Callable[[dict, dict], None]) -> Callable:
    """eval.npz rewritten with its arrays and meta record changed by ``edit(arrays, meta)``."""

    def damage(run: Path) -> Path:
        return rewrite_eval_set(run / "eval.npz", edit)

    return damage


def _eval_member_header(key: str, rows: int) -> Callable:
    """eval.npz whose ``key`` member's .npy header declares ``rows`` rows (its data left as it is)."""

    def damage(run: Path) -> Path:
        import zipfile

        path = run / "eval.npz"
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        data = members[f"{key}.npy"]
        length = int.from_bytes(data[8:10], "little")
        header = data[10 : 10 + length].decode("latin1")
        first = header.split("'shape': (")[1].split(",")[0]
        edited = header.replace(f"'shape': ({first},", f"'shape': ({rows},").rstrip("\n")
        members[f"{key}.npy"] = data[:10] + (edited.ljust(length - 1) + "\n").encode("latin1") + data[10 + length :]
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        return path

    return damage


def _json_file(name: str, edit: Callable[[dict], object]) -> Callable:
    """RUN/``name`` (JSON) replaced by what ``edit(its data)`` returns (a str is written as it is)."""

    def damage(run: Path) -> Path:
        path = run / name
        data = edit(json.loads(path.read_text()))
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path

    return damage


def _without(key: str) -> Callable[[dict], dict]:
    return lambda data: {k: v for k, v in data.items() if k != key}


def _tf_timing(edit: Callable[[dict], dict]) -> Callable:
    """RUN/bench/tf_timing.json: a recorded timing of the run's own model, changed by ``edit``."""

    def damage(run: Path) -> Path:
        import onnx

        source = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}["rnnforge.source_run"]
        row = {
            "engine": "tensorflow",
            "batch_size": 1,
            "seq_len": None,
            "runs": 10,
            "latency_ms": dict.fromkeys(("min", "mean", "p50", "p90", "p95", "p99", "p99_9", "max"), 1.0),
            "throughput_per_s": 1000.0,
        }
        record = {
            "task": "sketch",
            "source_run": source,
            "recorded_at": "2026-01-01T00:00:00Z",
            "machine": {"cpu": "a CPU", "logical_cores": 2},
            "intra_op_threads": 2,
            "rows": [row],
        }
        path = run / "bench" / "tf_timing.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(edit(record)))
        return path

    return damage


def _object_x(arrays: dict, meta: dict) -> None:
    clips = np.empty(len(arrays["x"]), dtype=object)
    for i, drawing in enumerate(arrays["x"]):
        clips[i] = drawing
    arrays["x"] = clips


def _renamed_input(arrays: dict, meta: dict) -> None:
    arrays["x.values"] = arrays.pop("x.series")
    meta["inputs"][0]["name"] = "values"


def _codes_with_their_record(arrays: dict, meta: dict) -> None:
    arrays["x.past_day_type"][0, 0] = 3
    meta["inputs"][1]["codes"] = [*meta["inputs"][1]["codes"], "X"]


def _half_precision_inputs(run: Path) -> Path:
    """RUN/model.fp16.onnx: the run's model behind a float16 input (a Cast to float32 first), so the
    stored float32 examples fit model.onnx but not this variant."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(run / "model.onnx"))
    name = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = [f"{name}_fp32" if n == name else n for n in node.input]
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    model.graph.node.insert(0, helper.make_node("Cast", [name], [f"{name}_fp32"], to=TensorProto.FLOAT))
    onnx.save(model, str(run / "model.fp16.onnx"))
    return run / "model.fp16.onnx"


def _earlier_results(run: Path) -> Path:
    """RUN/bench/ as an earlier bench left it (bench --all must leave it so when it refuses)."""
    (run / "bench").mkdir()
    (run / "bench" / "bench.json").write_text('{"earlier": "results"}')
    (run / "bench" / "report.md").write_text("# the earlier report\n")
    return run / "bench"


def _bench_all_second_run(edit: Callable[[Path], Path]) -> Callable:
    """``bench --all RUNS``: RUNS/a_sketch (good, with earlier results in bench/) is benched first
    in order, RUNS/b_sketch is damaged by ``edit``: refused before a_sketch is timed or written."""

    def setup(tmp: Path, runs: Runs):
        _earlier_results(runs.copy(to="runs/a_sketch"))
        named = edit(runs.copy(to="runs/b_sketch"))
        return ["bench", "--all", tmp / "runs", *BENCH_FAST], named

    return setup


CASES = [
    # sketch / QuickDraw files
    (
        "quickdraw_dir_missing",
        lambda tmp, runs: (_quickdraw(tmp / "nope"), tmp / "nope"),
        ["is not a directory", "expected QuickDraw"],
        2,
    ),
    ("quickdraw_dir_empty", lambda tmp, runs: (_quickdraw(tmp), tmp), ["holds no QuickDraw files"], 2),
    (
        "npz_not_a_zip",
        lambda tmp, runs: (
            _quickdraw((r := _npz_folder(tmp, lambda p: (p.write_bytes(b"\x80\x04not a pickle, not a zip"), p)[1]))[0]),
            r[1],
        ),
        ["is not a readable .npz", "not a zip archive"],
        2,
    ),
    (
        "npz_truncated",
        lambda tmp, runs: (_quickdraw((r := _npz_folder(tmp, lambda p: _truncate(_npz(p))))[0]), r[1]),
        ["is not a readable .npz (truncated or corrupt?)"],
        2,
    ),
    (
        "npz_unreadable",
        lambda tmp, runs: (_quickdraw((r := _npz_folder(tmp, lambda p: (p.mkdir(), p)[1]))[0]), r[1]),
        ["cannot be read"],
        2,
    ),
    (
        "npz_nan_values",
        lambda tmp, runs: (
            _quickdraw(
                (r := _npz_folder(tmp, lambda p: _npz(p, np.array([[1.0, np.nan, 0.0], [2.0, 3.0, 1.0]], np.float32))))[
                    0
                ]
            ),
            r[1],
        ),
        ["train[0]", "finite numbers", "float32"],
        2,
    ),
    (
        "npz_wrong_shape",
        lambda tmp, runs: (_quickdraw((r := _npz_folder(tmp, lambda p: _npz(p, np.ones((4, 2), np.int16))))[0]), r[1]),
        ["train[0]", "shape [n, 3]", "(4, 2)"],
        2,
    ),
    (
        "npz_missing_split",
        lambda tmp, runs: (_quickdraw((r := _npz_folder(tmp, lambda p: _npz(p, keys=("train", "valid"))))[0]), r[1]),
        ["no 'test' array"],
        2,
    ),
    (
        "ndjson_not_utf8",
        lambda tmp, runs: (_quickdraw((r := _ndjson_folder(tmp, b"\xff\xfe\x00\x81 binary"))[0]), r[1]),
        ["cannot be read as UTF-8 text"],
        2,
    ),
    (
        "ndjson_truncated",
        lambda tmp, runs: (
            _quickdraw((r := _ndjson_folder(tmp, _ndjson_line("cat", 0) + "\n" + _ndjson_line("cat", 1)[:40]))[0]),
            r[1],
        ),
        ["line 2: not JSON"],
        2,
    ),
    (
        "ndjson_wrong_drawing_type",
        lambda tmp, runs: (
            _quickdraw((r := _ndjson_folder(tmp, json.dumps({"key_id": "1", "drawing": "a cat"}) + "\n"))[0]),
            r[1],
        ),
        ["line 1: bad 'drawing'"],
        2,
    ),
    (
        "ndjson_nan_coordinates",
        lambda tmp, runs: (
            _quickdraw((r := _ndjson_folder(tmp, '{"key_id": "1", "drawing": [[[0, NaN], [1, 2]]]}\n'))[0]),
            r[1],
        ),
        ["line 1: bad 'drawing'", "NaN"],
        2,
    ),
    ("tfrecord_truncated", lambda tmp, runs: (_quickdraw(tmp), _tfrecord(tmp)), ["is not a readable TFRecord file"], 2),
    # forecast / CSV files
    (
        "csv_missing",
        lambda tmp, runs: (["train", "forecast", "--dataset", "csv", "--data-dir", tmp / "none.csv"], tmp / "none.csv"),
        ["does not exist or is not a file", "expected a daily CSV"],
        2,
    ),
    ("csv_empty", _csv_case(b""), ["is not a readable CSV"], 2),
    ("csv_binary", _csv_case(bytes(range(256)) * 4), ["is not a readable CSV"], 2),
    ("csv_truncated_quote", _csv_case(GOOD_CSV + '"2020-01-29,1'), ["is not a readable CSV"], 2),
    ("csv_wrong_column", _csv_case(GOOD_CSV, "--date-column", "day"), ["has no column 'day' (--date-column)"], 2),
    ("csv_inf_value", _csv_case(GOOD_CSV + "2020-01-29,inf\n"), ["line 30", "'inf' is not a non-negative number"], 2),
    (
        "csv_text_value",
        _csv_case(GOOD_CSV.replace("2020-01-05,105", "2020-01-05,many")),
        ["line 6", "'many' is not a non-negative number"],
        2,
    ),
    # video / clip files
    (
        "clip_wrong_dtype",
        lambda tmp, runs: (_video((r := _clips(tmp, "f.npy", np.zeros((16, 24, 24, 3), np.float32)))[0]), r[1]),
        ["expected uint8 frames [T, H, W, 3]", "float32"],
        2,
    ),
    (
        "clip_wrong_shape",
        lambda tmp, runs: (_video((r := _clips(tmp, "g.npy", np.zeros((16, 24, 24), np.uint8)))[0]), r[1]),
        ["expected uint8 frames [T, H, W, 3]", "[16, 24, 24]"],
        2,
    ),
    (
        "clip_truncated",
        lambda tmp, runs: (_video((r := _clips(tmp, "t.npy", _npy_bytes()[:700]))[0]), r[1]),
        ["is not a readable .npy array"],
        2,
    ),
    ("clip_dir_missing", lambda tmp, runs: (_video(tmp / "nope"), tmp / "nope"), ["is not a directory"], 2),
    # training options
    ("workers_negative", _options("train", "sketch", "--workers", "-1"), ["--workers must be at least 1, got -1"], 2),
    (
        "batch_size_zero",
        _options("train", "sketch", "--batch-size", "0"),
        ["--batch-size must be at least 1, got 0"],
        2,
    ),
    ("epochs_negative", _options("train", "sketch", "--epochs", "-3"), ["--epochs must be at least 1, got -3"], 2),
    ("max_len_zero", _options("train", "sketch", "--max-len", "0"), ["--max-len must be at least 1"], 2),
    (
        "learning_rate_zero",
        _options("train", "sketch", "--learning-rate", "0"),
        ["--learning-rate must be positive"],
        2,
    ),
    ("clipnorm_negative", _options("train", "sketch", "--clipnorm", "-1"), ["--clipnorm must be at least 0"], 2),
    (
        "gpus_negative",
        _options("train", "sketch", "--gpus-per-worker", "-1"),
        ["--gpus-per-worker must be at least 0"],
        2,
    ),
    (
        "workers_not_a_number",
        _options("train", "sketch", "--workers", "two"),
        ["'--workers'", "'two' is not a valid integer"],
        2,
    ),
    (
        "cpus_per_worker_zero",
        _options("train", "sketch", "--cpus-per-worker", "0"),
        ["--cpus-per-worker must be at least 1, got 0"],
        2,
    ),
    ("dropout_one", _options("train", "sketch", "--dropout", "1"), ["--dropout must be in [0, 1), got 1.0"], 2),
    ("units_zero", _options("train", "sketch", "--units", "0"), ["--units must be at least 1, got 0"], 2),
    ("patience_negative", _options("train", "sketch", "--patience", "-1"), ["--patience must be at least 0"], 2),
    (
        "max_failures_negative",
        _options("train", "sketch", "--max-failures", "-2"),
        ["--max-failures must be at least 0, got -2"],
        2,
    ),
    (
        "checkpoint_every_zero",
        _options("train", "sketch", "--checkpoint-every", "0"),
        ["--checkpoint-every must be at least 1, got 0"],
        2,
    ),
    (
        "max_per_class_zero",
        _options("train", "sketch", "--dataset", "quickdraw", "--max-per-class", "0"),
        ["--max-per-class must be at least 1, got 0"],
        2,
    ),
    (
        "length_buckets_zero",
        _options("train", "sketch", "--length-buckets", "0"),
        ["--length-buckets must be at least 1, got 0"],
        2,
    ),
    ("frames_zero", _options("train", "video", "--frames", "0"), ["--frames must be at least 1, got 0"], 2),
    ("frame_size_zero", _options("train", "video", "--frame-size", "0"), ["--frame-size must be at least 1"], 2),
    ("window_zero", _options("train", "forecast", "--window", "0"), ["--window must be at least 7", "got 0"], 2),
    ("ensemble_zero", _options("train", "forecast", "--ensemble", "0"), ["--ensemble must be at least 1, got 0"], 2),
    (
        "distil_one_network",
        _options("train", "forecast", "--ensemble", "1", "--distil"),
        ["--distil trains one network from an ensemble's members: it needs --ensemble 2 or more, got 1"],
        2,
    ),
    ("distil_sketch", _options("train", "sketch", "--distil"), ["--distil does not apply to task 'sketch'"], 2),
    (
        "quantiles_decreasing",
        _options("train", "forecast", "--quantiles", "0.9,0.5,0.1"),
        ["--quantiles must increase: 0.5 follows 0.9"],
        2,
    ),
    (
        "quantiles_one",
        _options("train", "forecast", "--quantiles", "0.1,0.5,1"),
        ["--quantiles: 1 is not a level in (0, 1)"],
        2,
    ),
    (
        "quantiles_no_median",
        _options("train", "forecast", "--quantiles", "0.1,0.9"),
        ["--quantiles must include 0.5: the median is the served point forecast"],
        2,
    ),
    (
        "quantiles_text",
        _options("train", "forecast", "--quantiles", "0.1,p50"),
        ["--quantiles: 'p50' is not a number"],
        2,
    ),
    (
        "quantiles_sketch",
        _options("train", "sketch", "--quantiles", "0.1,0.5,0.9"),
        ["--quantiles does not apply to task 'sketch'"],
        2,
    ),
    (
        "horizon_beyond_a_week",
        _options("train", "forecast", "--horizon", "8"),
        ["--horizon must be between 1 and 7 days, got 8"],
        2,
    ),
    (
        "train_start_not_a_date",
        _options("train", "forecast", "--train-start", "someday"),
        ["--train-start 'someday' is not a date (expected YYYY-MM-DD)"],
        2,
    ),
    (
        "workers_more_than_cpus",
        _options("train", "sketch", "--workers", str(min(8 * (os.cpu_count() or 1), 1024))),
        ["CPUs; this machine has"],
        2,
    ),
    (
        "gpus_more_than_available",
        _options("train", "sketch", "--gpus-per-worker", "16"),
        ["--gpus-per-worker 16", "needs 32 GPUs; the Ray cluster has"],
        2,
    ),
    ("run_dir_is_a_file", _run_dir_is_a_file, ["'--run-dir'", "is a file"], 2),
    (
        "overwrite_with_bad_data",
        lambda tmp, runs: (
            _quickdraw(
                (r := _npz_folder(tmp, lambda p: _truncate(_npz(p))))[0], "--run-dir", runs.copy(), "--overwrite"
            ),
            r[1],
        ),
        ["is not a readable .npz"],
        2,
    ),
    # export
    (
        "export_failed_run",
        _run_copy(_failed_run, "export", "onnx", lambda run: run),
        ["config.json is missing", "is not a finished 'rnnforge train' run"],
        2,
    ),
    (
        "export_model_missing",
        _run_copy(_remove("model.keras"), "export", "onnx", lambda run: run),
        ["model.keras is missing", "did not finish"],
        2,
    ),
    (
        "export_model_corrupt",
        _run_copy(lambda run: _truncate(run / "model.keras", 0.3), "export", "onnx", lambda run: run),
        ["model.keras cannot be loaded by tf-keras"],
        2,
    ),
    (
        "export_config_truncated",
        _run_copy(lambda run: _truncate(run / "config.json"), "export", "onnx", lambda run: run),
        ["config.json is not valid JSON"],
        2,
    ),
    (
        "export_config_unknown_task",
        _run_copy(_replace("config.json", b'{"task": "pottery", "info": {}}'), "export", "onnx", lambda run: run),
        ["unknown task 'pottery'"],
        2,
    ),
    (
        "export_opset_zero",
        _run_copy(lambda run: OPTION_ONLY, "export", "onnx", lambda run: run, "--opset", "0"),
        ["--opset 0 is not supported", "17 or 18"],
        2,
    ),
    (
        "export_atol_negative",
        _run_copy(lambda run: OPTION_ONLY, "export", "onnx", lambda run: run, "--atol", "-1"),
        ["--atol must be a non-negative tolerance"],
        2,
    ),
    (
        "export_fuse_members_sketch",
        _run_copy(lambda run: OPTION_ONLY, "export", "onnx", lambda run: run, "--fuse-members"),
        ["--fuse-members does not apply to task 'sketch': it has no ensemble"],
        2,
    ),
    # bench
    (
        "bench_ensemble_not_kept",
        _run_copy(lambda run: run / "model.ensemble.onnx", "bench", lambda run: run, "--variants", "fp32,ensemble"),
        ["model.ensemble.onnx does not exist: only a distilled forecaster (trained with --distil)"],
        2,
    ),
    (
        "bench_not_exported",
        _run_copy(_remove("model.onnx"), "bench", lambda run: run),
        ["model.onnx does not exist", "rnnforge export onnx"],
        2,
    ),
    (
        "bench_onnx_empty",
        _run_copy(_replace("model.onnx", b""), "bench", lambda run: run),
        ["is not a valid ONNX model"],
        2,
    ),
    (
        "bench_onnx_truncated",
        _run_copy(lambda run: _truncate(run / "model.onnx"), "bench", lambda run: run),
        ["is not a valid ONNX model"],
        2,
    ),
    ("bench_not_onnx", _bench_model(_not_onnx), ["is not a valid ONNX model"], 2),
    (
        "bench_onnx_fails_checker",
        _bench_model(_edited_onnx(_dangling_input_model)),
        ["is not a valid ONNX model", "undefined"],
        2,
    ),
    ("bench_onnx_not_rnnforge", _bench_model(_edited_onnx(_identity_model)), ["is not an rnnforge export"], 2),
    (
        "bench_onnx_other_task",
        _bench_model(_forecast_onnx),
        ["was exported for task 'forecast', but the run is 'sketch'"],
        2,
    ),
    (
        "bench_onnx_other_run",
        _bench_model(_edited_onnx(_set_meta("rnnforge.class_names", json.dumps(["cat", "dog"])))),
        ["was exported from another sketch run", "class_names"],
        2,
    ),
    (
        "bench_batch_sizes_zero",
        lambda tmp, runs: (["bench", runs.shared_run(), "--batch-sizes", "0"], OPTION_ONLY),
        ["'--batch-sizes'", "must be positive integers"],
        2,
    ),
    (
        "bench_runs_zero",
        lambda tmp, runs: (["bench", runs.shared_run(), "--runs", "0"], OPTION_ONLY),
        ["'--runs'", "0 is not in the range"],
        2,
    ),
    # issue #14, 1: code in a data file never runs
    (
        "npz_pickle_runs_a_command",
        lambda tmp, runs: _crafted_npz(tmp, _Command(f"touch {tmp}/marker")),
        ["is refused", "posix.system", "only numpy arrays are loaded"],
        2,
    ),
    (
        "npz_pickle_names_eval",
        lambda tmp, runs: _crafted_npz(tmp, _Global(eval, "1+1")),
        ["is refused", "builtins.eval"],
        2,
    ),
    # issue #14, 2: numbers out of range
    ("csv_value_beyond_float32", _csv_case(GOOD_CSV + "2020-01-29,1e300\n"), ["line 30", "'1e300'", "float32"], 2),
    (
        "csv_value_beyond_float64",
        _csv_case(GOOD_CSV + "2020-01-29,1" + "0" * 400 + "\n"),
        ["line 30", "not a non-negative number within float32 range"],
        2,
    ),
    (
        "ndjson_offset_beyond_int16",
        lambda tmp, runs: (_quickdraw((r := _ndjson_folder(tmp, _ndjson_drawing("[[[0, 40000], [0, 1]]]")))[0]), r[1]),
        ["line 1: bad 'drawing'", "offset 40000 is beyond int16"],
        2,
    ),
    (
        "ndjson_coordinate_beyond_int64",
        lambda tmp, runs: (
            _quickdraw((r := _ndjson_folder(tmp, _ndjson_drawing(f"[[[0, {10**20}], [0, 1]]]")))[0]),
            r[1],
        ),
        ["line 1: bad 'drawing'", "beyond int16"],
        2,
    ),
    (
        "ndjson_coordinate_beyond_float64",
        lambda tmp, runs: (
            _quickdraw((r := _ndjson_folder(tmp, _ndjson_drawing(f"[[[0, {10**400}], [0, 1]]]")))[0]),
            r[1],
        ),
        ["line 1: bad 'drawing'", "beyond float64"],
        2,
    ),
    (
        "ndjson_coordinate_infinite",
        lambda tmp, runs: (_quickdraw((r := _ndjson_folder(tmp, _ndjson_drawing("[[[0, 1e999], [0, 1]]]")))[0]), r[1]),
        ["line 1: bad 'drawing'", "finite numbers"],
        2,
    ),
    (
        "npz_offset_beyond_int16",
        lambda tmp, runs: (
            _quickdraw((r := _npz_folder(tmp, lambda p: _npz(p, np.array([[40000, 1, 0], [2, 3, 1]], np.int32))))[0]),
            r[1],
        ),
        ["train[0]", "offset 40000 is beyond int16"],
        2,
    ),
    # issue #14, 3: dates with time zones (parsed when they can be, else one line)
    (
        "csv_zone_after_naive_dates",
        _csv_case(GOOD_CSV + "2020-01-29T00:00:00+05:00,5\n"),
        ["line 30", "cannot parse date '2020-01-29T00:00:00+05:00' as a date"],
        2,
    ),
    (
        "csv_zoned_dates_clash_after_conversion",
        _csv_case("date,value\n2020-01-02T01:00:00+05:00,1\n2020-01-01T21:00:00Z,2\n"),
        ["2020-01-01 appears with different value values (1, 2)"],
        2,
    ),
    # issue #14, 4: unwritable places are refused before any work
    (
        "run_dir_under_a_file",
        lambda tmp, runs: (
            ["train", "sketch", "--run-dir", ((tmp / "f").write_text("x"), tmp / "f" / "run")[1]],
            tmp / "f",
        ),
        ["--run-dir", "cannot be created", "is a file, not a directory"],
        2,
    ),
    (
        "run_dir_in_proc",
        lambda tmp, runs: (["train", "sketch", "--run-dir", UNWRITABLE / "run"], UNWRITABLE),
        ["--run-dir", "/proc is not writable"],
        2,
    ),
    (
        "storage_path_in_proc",
        lambda tmp, runs: (
            ["train", "sketch", "--run-dir", tmp / "run", "--storage-path", UNWRITABLE],
            UNWRITABLE,
        ),
        ["--storage-path", "/proc is not writable"],
        2,
    ),
    (
        "export_output_in_proc",
        _run_copy(
            lambda run: UNWRITABLE / "m.onnx", "export", "onnx", lambda run: run, "--output", UNWRITABLE / "m.onnx"
        ),
        ["--output", "/proc is not writable"],
        2,
    ),
    (
        "export_output_under_a_file",
        _run_copy(
            lambda run: run / "config.json",
            "export",
            "onnx",
            lambda run: run,
            "--output",
            lambda run: run / "config.json" / "m.onnx",
        ),
        ["--output", "is a file, not a directory"],
        2,
    ),
    (
        "bench_output_folder_is_a_file",
        _run_copy(_make_file("bench"), "bench", lambda run: run, "--batch-sizes", "1"),
        ["bench's output folder", "is a file, expected a directory"],
        2,
    ),
    (
        "compare_output_in_proc",
        _compare([_latency_row()], [_latency_row()], "--output", UNWRITABLE / "cmp.md", bad=None),
        ["--output", "/proc is not writable"],
        2,
    ),
    # issue #14, 5: the regression gate never passes without checking
    (
        "compare_no_common_row",
        _compare([_latency_row(1)], [_latency_row(32)], bad="a"),
        ["share no row", "nothing to compare"],
        2,
    ),
    (
        "compare_threshold_nan",
        _compare([_latency_row()], [_latency_row()], "--threshold", "nan", bad=None),
        ["--threshold nan", "a finite number above 0"],
        2,
    ),
    (
        "compare_threshold_inf",
        _compare([_latency_row()], [_latency_row()], "--threshold", "inf", bad=None),
        ["--threshold inf", "a finite number above 0"],
        2,
    ),
    (
        "compare_threshold_negative",
        _compare([_latency_row()], [_latency_row()], "--threshold", "-1", bad=None),
        ["--threshold -1", "a finite number above 0"],
        2,
    ),
    (
        "compare_row_lacks_latency",
        _compare([_latency_row()], [{"engine": "onnxruntime", "batch_size": 1}]),
        ["latency row 0", "lacks 'latency_ms'"],
        2,
    ),
    (
        "compare_row_figure_not_a_number",
        _compare(
            [_latency_row()],
            [{**_latency_row(), "latency_ms": {**_latency_row()["latency_ms"], "p50": "fast"}}],
        ),
        ["latency row 0", "latency_ms.p50 is 'fast'", "positive number"],
        2,
    ),
    ("compare_row_not_an_object", _compare([_latency_row()], [7]), ["latency row 0 is int"], 2),
    (
        "compare_row_lacks_engine",
        _compare([{k: v for k, v in _latency_row().items() if k != "engine"}], [_latency_row()], bad="a"),
        ["latency row 0", "lacks 'engine'"],
        2,
    ),
    (
        "compare_result_without_task",
        lambda tmp, runs: (
            [
                "bench",
                "compare",
                _bench_json(tmp / "a.json", [_latency_row()]),
                (tmp / "b.json", (tmp / "b.json").write_text(json.dumps({"schema_version": 3, "latency": []})))[0],
            ],
            tmp / "b.json",
        ),
        ["has no 'task' name"],
        2,
    ),
    # issue #14, 7: artifacts that lie
    (
        "bench_model_onnx_from_another_run",
        _run_copy(_set_run_meta("rnnforge.source_model_sha256", "0" * 64), "bench", lambda run: run),
        ["was exported from another run", "name the file with --model"],
        2,
    ),
    # issue #14, 8: smaller
    (
        "bench_batch_sizes_twenty_digits",
        lambda tmp, runs: (["bench", runs.shared_run(), "--batch-sizes", "9" * 20], OPTION_ONLY),
        ["--batch-sizes 99999999999999999999", "GB", "bytes per example"],
        2,
    ),
    (
        "clip_upper_case_npy",
        lambda tmp, runs: (_video((r := _clips(tmp, "F.NPY", np.zeros((16, 24, 24, 3), np.float32)))[0]), r[1]),
        ["expected uint8 frames [T, H, W, 3]", "float32"],
        2,
    ),
    # issue #14, 10: checks that need no data run first (the local machine's GPUs: no Ray)
    (
        "gpus_more_than_this_machine",
        _options("train", "sketch", "--gpus-per-worker", "16"),
        ["--gpus-per-worker 16", "needs 32 GPUs", "a local run: this machine's GPUs"],
        2,
    ),  # issue #19: elastic workers, shared storage, MLflow tracking
    ("min_workers_zero", _options("train", "sketch", "--min-workers", "0"), ["--min-workers must be at least 1"], 2),
    (
        "min_workers_above_workers",
        _options("train", "sketch", "--workers", "2", "--min-workers", "3"),
        ["--min-workers 3 is more than --workers 2"],
        2,
    ),
    (
        "workers_range_reversed",
        _options("train", "sketch", "--workers", "3-1"),
        ["--workers 3-1: MIN is more than MAX"],
        2,
    ),
    (
        "workers_range_and_min_workers",
        _options("train", "sketch", "--workers", "1-2", "--min-workers", "1"),
        ["--workers 1-2 and --min-workers 1"],
        2,
    ),
    ("workers_range_not_numbers", _options("train", "sketch", "--workers", "a-b"), ["'a-b' is not a valid integer"], 2),
    (
        "min_workers_more_than_cpus",
        _options("train", "sketch", "--workers", "64-128"),
        ["--min-workers 64", "CPUs; this machine has"],
        2,
    ),
    (
        "shared_storage_without_storage_path",
        _options("train", "sketch", "--shared-storage"),
        ["--shared-storage", "give --storage-path"],
        2,
    ),
    (
        "mlflow_tracking_uri_unknown_scheme",
        _options("train", "sketch", "--mlflow-tracking-uri", "nosuch://tracking"),
        ["--mlflow-tracking-uri nosuch://tracking", "unsupported URI"],
        2,
    ),
    (
        "export_mlflow_run_id_without_tracking_uri",
        _run_copy(lambda run: OPTION_ONLY, "export", "onnx", lambda run: run, "--mlflow-run-id", "0123abcd"),
        ["--mlflow-run-id 0123abcd", "MLFLOW_TRACKING_URI"],
        2,
    ),
    # issue #18: day-type covariates (a CSV column, a holidays file, codes in the eval set)
    (
        "csv_day_type_unseen_code",
        _csv_case(
            _DAY_TYPE_CSV.replace("2020-01-25,125,A", "2020-01-25,125,X"),
            *_DAY_TYPE_OPTIONS,
        ),
        ["line 26", "kind 'X' is not one of the codes of the training days (W, A)"],
        2,
    ),
    (
        "csv_day_type_missing_code",
        _csv_case(_DAY_TYPE_CSV.replace("2020-01-06,106,W", "2020-01-06,106,"), *_DAY_TYPE_OPTIONS),
        ["line 7", "no day-type code"],
        2,
    ),
    (
        "csv_day_type_no_column",
        _csv_case(GOOD_CSV, "--day-type-column", "kind"),
        ["has no column 'kind' (--day-type-column)"],
        2,
    ),
    (
        "holidays_line_not_a_date",
        lambda tmp, runs: (
            [*_csv_case(GOOD_CSV)(tmp, runs)[0], "--holidays", _text(tmp / "holidays.txt", "2020-01-01\n2020-13-01\n")],
            tmp / "holidays.txt",
        ),
        ["line 2: '2020-13-01' is not a date (expected YYYY-MM-DD)"],
        2,
    ),
    (
        "bench_eval_day_type_out_of_range",
        lambda tmp, runs: (["bench", (r := _forecast_code(runs.copy("forecast_run", "forecast"), 3))], r / "eval.npz"),
        ["x.past_day_type holds code 3, outside the model's codes 0..2 (0 = W, 1 = A, 2 = U)"],
        2,
    ),
    # issue #27, 4: options that do not apply to the dataset, or contradict one another
    (
        "holidays_for_the_synthetic_series",
        _options("train", "forecast", "--holidays", "{tmp}/holidays.txt"),
        ["--holidays does not apply to dataset 'synthetic' of task 'forecast'", "only to --dataset csv"],
        2,
    ),
    (
        "day_type_column_for_cta",
        _options("train", "forecast", "--dataset", "cta_ridership", "--day-type-column", "kind"),
        ["--day-type-column does not apply to dataset 'cta_ridership'"],
        2,
    ),
    (
        "difficulty_for_folder_clips",
        _options("train", "video", "--dataset", "folder", "--data-dir", "{tmp}", "--difficulty", "hard"),
        ["--difficulty does not apply to dataset 'folder' of task 'video'", "only to --dataset synthetic"],
        2,
    ),
    (
        "sampling_for_synthetic_clips",
        _options("train", "video", "--sampling", "random"),
        ["--sampling does not apply to dataset 'synthetic'", "folder or ucf101"],
        2,
    ),
    (
        "data_dir_for_the_synthetic_drawings",
        _options("train", "sketch", "--data-dir", "{tmp}"),
        ["--data-dir does not apply to dataset 'synthetic' of task 'sketch'"],
        2,
    ),
    (
        "holidays_with_day_type_column",
        _holidays_case("2020-01-01\n", "--day-type-column", "value", named=False),
        ["--holidays and --day-type-column both give the day types"],
        2,
    ),
    (
        "holidays_with_covariates_none",
        _holidays_case("2020-01-01\n", "--covariates", "none", named=False),
        ["--holidays gives day types, which --covariates none leaves out"],
        2,
    ),
    (
        "value_column_is_the_date_column",
        _options("train", "forecast", "--dataset", "csv", "--data-dir", "{tmp}/s.csv", "--value-column", "date"),
        ["--value-column 'date' is the --date-column too"],
        2,
    ),
    (
        "holidays_with_a_bom_then_a_bad_line",  # line 1 (after the BOM) is read; line 2 is refused
        _holidays_case(b"\xef\xbb\xbf2020-01-01\n2020-02-30\n"),
        ["line 2: '2020-02-30' is not a date (expected YYYY-MM-DD)"],
        2,
    ),
    (
        "holidays_iso_week_date",
        _holidays_case("2016-W27-1\n"),
        ["line 1: '2016-W27-1' is not a date (expected YYYY-MM-DD)"],
        2,
    ),
    (
        "holidays_basic_date_format",
        _holidays_case("2020-01-01\n20170704\n"),
        ["line 2: '20170704' is not a date (expected YYYY-MM-DD)"],
        2,
    ),
    (
        "csv_value_header_twice",
        _csv_case(GOOD_CSV.replace("date,value", "date,value,value").replace("\n2020", ",7\n2020")),
        ["the header names column 'value' (--value-column) 2 times (columns 2, 3)"],
        2,
    ),
    (
        "csv_day_type_codes_named_first_few",
        _csv_case(_MANY_CODES_CSV, *_DAY_TYPE_OPTIONS),
        ["line 22", "kind 'c21' is not one of the codes", "(c1, c2, c3, c4, c5, c6, c7, c8, ... (20 codes))"],
        2,
    ),
    (
        "workers_range_from_zero",
        _options("train", "sketch", "--workers", "0-2"),
        ["--workers 0-2: MIN must be at least 1"],
        2,
    ),
    (
        "export_run_dir_is_a_file",
        lambda tmp, runs: (["export", "onnx", _text(tmp / "run", "x")], tmp / "run"),
        ["is a file, not a folder"],
        2,
    ),
    # issue #27, 5: every number finite and bounded, before Ray starts
    ("lr_warmup_infinite", _options("train", "forecast", "--lr-warmup", "inf"), ["--lr-warmup must be a finite"], 2),
    (
        "learning_rate_nan",
        _options("train", "sketch", "--learning-rate", "nan"),
        ["--learning-rate must be a finite number, got nan"],
        2,
    ),
    ("clipnorm_infinite", _options("train", "sketch", "--clipnorm", "inf"), ["--clipnorm must be a finite"], 2),
    (
        "gpus_per_worker_infinite",
        _options("train", "sketch", "--gpus-per-worker", "inf"),
        ["--gpus-per-worker must be a finite number"],
        2,
    ),
    (
        "ensemble_ten_thousand",
        _options("train", "forecast", "--ensemble", "10000"),
        ["--ensemble must be at most 32", "Adam state", "got 10000"],
        2,
    ),
    (
        "epochs_beyond_the_limit",
        _options("train", "sketch", "--epochs", "10000000"),
        ["--epochs must be at most 100000 epochs", "got 10000000"],
        2,
    ),
    (
        "batch_size_beyond_the_limit",
        _options("train", "sketch", "--batch-size", "1000000"),
        ["--batch-size must be at most 65536"],
        2,
    ),
    ("units_beyond_the_limit", _options("train", "sketch", "--units", "100000"), ["--units must be at most 4096"], 2),
    (
        "frame_size_beyond_the_limit",
        _options("train", "video", "--frame-size", "100000"),
        ["--frame-size must be at most 1024", "3 MB"],
        2,
    ),
    (
        "window_beyond_the_limit",
        _options("train", "forecast", "--window", "100000"),
        ["--window must be at most 3660 days"],
        2,
    ),
    ("seed_negative", _options("train", "sketch", "--seed", "-1"), ["--seed must be between 0 and 4294967295"], 2),
    (
        "seed_beyond_numpy",
        _options("train", "sketch", "--seed", str(2**32)),
        ["--seed must be between 0 and 4294967295 (numpy's seed range)"],
        2,
    ),
    (
        "workers_beyond_the_limit",
        _options("train", "sketch", "--workers", "100000"),
        ["--workers must be at most 1024"],
        2,
    ),
    (
        "bench_max_seconds_infinite",
        lambda tmp, runs: (["bench", runs.shared_run(), "--max-seconds", "inf"], OPTION_ONLY),
        ["--max-seconds must be at most 3600", "got inf"],
        2,
    ),
    (
        "bench_warmup_beyond_the_limit",
        lambda tmp, runs: (["bench", runs.shared_run(), "--warmup", "10000000"], OPTION_ONLY),
        ["--warmup must be at most 100000"],
        2,
    ),
    (
        "bench_warmup_neither_auto_nor_a_count",
        lambda tmp, runs: (["bench", runs.shared_run(), "--warmup", "soon"], OPTION_ONLY),
        ["--warmup", "expected auto or a number of calls, got 'soon'"],
        2,
    ),
    (
        "bench_target_ci_beyond_the_limit",
        lambda tmp, runs: (["bench", runs.shared_run(), "--target-ci", "0.9"], OPTION_ONLY),
        ["--target-ci must be at most 0.5", "got 0.9"],
        2,
    ),
    (
        "export_atol_infinite",
        _run_copy(lambda run: OPTION_ONLY, "export", "onnx", lambda run: run, "--atol", "inf"),
        ["--atol must be a non-negative tolerance, finite, got inf"],
        2,
    ),
    # issue #27, 6: credentials in a URI are refused and never echoed; an empty URI is no "off"
    (
        "mlflow_uri_with_a_password",
        _options("train", "sketch", "--mlflow-tracking-uri", f"http://alice:{SECRET}@mlflow.example:5000"),
        ["--mlflow-tracking-uri http://***@mlflow.example:5000", "holds credentials", "MLFLOW_TRACKING_PASSWORD"],
        2,
    ),
    (
        "mlflow_uri_with_a_token_as_user",
        _options("train", "sketch", "--mlflow-tracking-uri", f"https://{SECRET}@mlflow.example/"),
        ["--mlflow-tracking-uri https://***@mlflow.example/", "holds credentials"],
        2,
    ),
    (
        "mlflow_uri_empty",
        _options("train", "sketch", "--mlflow-tracking-uri", ""),
        ["--mlflow-tracking-uri is empty"],
        2,
    ),
    (
        "storage_path_with_a_secret_key",
        _options("train", "sketch", "--storage-path", f"s3://bucket/runs?access_key=AKIA&secret_key={SECRET}"),
        ["--storage-path s3://bucket/runs?access_key=***&secret_key=***", "holds credentials"],
        2,
    ),
    (
        "export_mlflow_run_id_in_a_missing_sqlite_store",  # refused without creating mlflow.db
        _tracking_env("sqlite:///{tmp}/mlflow.db", "0123abcd"),
        ["--mlflow-run-id 0123abcd at sqlite:///", "no MLflow database at"],
        2,
    ),
    (
        "export_mlflow_uri_from_the_environment_redacted",  # MLflow's own message quotes the URI too
        _tracking_env(f"http://alice:{SECRET}@127.0.0.1:1/", "0123abcd"),
        ["--mlflow-run-id 0123abcd at http://***@127.0.0.1:1/", "Connection refused"],
        2,
    ),
    # issue #27, 1: every run-dir file checked against its schema before any work (core/run_files.py)
    (
        "bench_eval_meta_shape_an_object",
        _bench_tampered(_eval_edit(lambda a, m: m["input"].update(shape={"rows": 100}))),
        ["eval.npz: meta field /input/shape is an object, expected a list", "re-run 'rnnforge export onnx"],
        2,
    ),
    (
        "bench_eval_meta_shape_null",
        _bench_tampered(_eval_edit(lambda a, m: m["input"].update(shape=None))),
        ["meta field /input/shape is null, expected a list"],
        2,
    ),
    (
        "bench_eval_meta_codes_a_number",
        _bench_tampered(_eval_edit(lambda a, m: m["inputs"][1].update(codes=3)), fixture="forecast_run"),
        ["meta field /inputs/1/codes is an integer (3), expected a list"],
        2,
    ),
    (
        "bench_eval_meta_lacks_a_field_read_after_timing",
        _bench_tampered(_eval_edit(lambda a, m: m.pop("examples_in_split"))),
        ["meta field /examples_in_split is missing"],
        2,
    ),
    (
        "bench_eval_meta_info_a_list",
        _bench_tampered(_eval_edit(lambda a, m: m.update(info=["class_names"]))),
        ["meta field /info is a list, expected an object"],
        2,
    ),
    (
        "bench_eval_header_declares_a_trillion_rows",
        _bench_tampered(_eval_member_header("x", 10**12)),
        ["eval.npz: x's header declares float32 [1000000000000, 100, 3]", "truncated or tampered"],
        2,
    ),
    (
        "bench_eval_labels_header_declares_more_rows",
        _bench_tampered(_eval_member_header("y", 10**9)),
        ["eval.npz: y's header declares int64 [1000000000]", "but it holds"],
        2,
    ),
    (
        "bench_eval_inputs_python_objects",
        _bench_tampered(_eval_edit(_object_x)),
        ["eval.npz: x holds Python objects, expected numbers"],
        2,
    ),
    (
        "bench_onnx_metadata_not_json",
        _bench_tampered(_set_run_meta("rnnforge.class_names", "[circle, square")),
        ["model.onnx: metadata rnnforge.class_names is not JSON"],
        2,
    ),
    (
        "bench_onnx_metadata_info_a_list",
        _bench_tampered(_set_run_meta("rnnforge.info", "[1, 2]")),
        ["model.onnx: metadata rnnforge.info is a list, expected an object"],
        2,
    ),
    (
        "bench_onnx_metadata_day_types_a_string",
        _bench_tampered(_set_run_meta("rnnforge.day_types", '"WAU"'), fixture="forecast_run"),
        ['model.onnx: metadata rnnforge.day_types is a string ("WAU"), expected a list'],
        2,
    ),
    (
        "bench_config_info_a_string",
        _bench_tampered(_json_file("config.json", lambda c: {**c, "info": "classes"})),
        ['config.json: field /info is a string ("classes"), expected an object'],
        2,
    ),
    (
        "bench_config_info_lacks_the_window",
        _bench_tampered(
            _json_file("config.json", lambda c: {**c, "info": _without("window")(c["info"])}), fixture="forecast_run"
        ),
        ["config.json: field /info/window is missing"],
        2,
    ),
    (
        "bench_config_option_of_another_type",
        _bench_tampered(_json_file("config.json", lambda c: {**c, "epochs": "twelve"})),
        ['config.json: field /epochs is a string ("twelve"), expected an integer'],
        2,
    ),
    (
        "bench_parity_not_json",
        _bench_tampered(_json_file("parity.json", lambda p: "{'opset': 17")),
        ["parity.json is not valid JSON", "re-run 'rnnforge export onnx"],
        2,
    ),
    (
        "bench_parity_lacks_a_field",
        _bench_tampered(_json_file("parity.json", _without("opset"))),
        ["parity.json: field /opset is missing"],
        2,
    ),
    (
        "bench_metrics_lacks_a_field",
        _bench_tampered(_json_file("metrics.json", _without("epochs_run"))),
        ["metrics.json: field /epochs_run is missing", "remove it to bench without the training section"],
        2,
    ),
    (
        "bench_tf_timing_zero_threads",
        _bench_tampered(_tf_timing(lambda r: {**r, "intra_op_threads": 0}), "--tf-baseline", "recorded"),
        ["tf_timing.json: field /intra_op_threads is 0, expected at least 1", "delete it and bench again"],
        2,
    ),
    (
        "bench_tf_timing_row_without_keys",
        _bench_tampered(_tf_timing(lambda r: {**r, "rows": [{"engine": "tensorflow"}]}), "--tf-baseline", "recorded"),
        ["tf_timing.json: field /rows/0/batch_size is missing"],
        2,
    ),
    (
        "bench_tf_timing_not_json",
        _bench_tampered(
            lambda run: _text(_tf_timing(lambda r: r)(run), '{"task": "sketch", '), "--tf-baseline", "recorded"
        ),
        ["tf_timing.json is not valid JSON"],
        2,
    ),
    (
        "export_mlflow_json_damaged",
        _tampered(
            lambda run: _text(run / "mlflow.json", '{"tracking_uri": "sqlite:///m.db", "run_id": '),
            "export",
            "onnx",
            lambda run: run,
        ),
        ["mlflow.json is not valid JSON", "remove it, or give --mlflow-run-id"],
        2,
    ),
    (
        "export_mlflow_json_run_id_a_number",
        _tampered(
            lambda run: _text(run / "mlflow.json", '{"tracking_uri": "sqlite:///m.db", "run_id": 7}'),
            "export",
            "onnx",
            lambda run: run,
        ),
        ["mlflow.json: field /run_id is an integer (7), expected a string"],
        2,
    ),
    (
        "export_config_info_a_string",
        _tampered(_json_file("config.json", lambda c: {**c, "info": "classes"}), "export", "onnx", lambda run: run),
        ['config.json: field /info is a string ("classes"), expected an object'],
        2,
    ),
    (
        "bench_load_eval_meta_shape_null",
        _tampered(
            _eval_edit(lambda a, m: m["input"].update(shape=None)),
            "bench",
            "load",
            lambda run: run,
            "--concurrency",
            "1",
        ),
        ["meta field /input/shape is null, expected a list"],
        2,
    ),
    (
        "compare_bench_json_not_json",
        lambda tmp, runs: (
            ["bench", "compare", _bench_json(tmp / "a.json", [_latency_row()]), _text(tmp / "b.json", '{"latency": [')],
            tmp / "b.json",
        ),
        ["b.json is not valid JSON", "expected a bench.json or bench_all.json"],
        2,
    ),
    # issue #27, 2: the stored examples against the model's declared inputs, every one of them
    (
        "bench_eval_dtype_edited_with_its_record",
        _bench_tampered(
            _eval_edit(lambda a, m: (a.update(x=a["x"].astype(np.float64)), m["input"].update(dtype="float64")))
        ),
        ["eval.npz: inputs are float64, but the model takes float32"],
        2,
    ),
    (
        "bench_eval_third_input_shape_edited_with_its_record",
        _bench_tampered(
            _eval_edit(
                lambda a, m: (
                    a.update({"x.future_day_type": a["x.future_day_type"][:, :5]}),
                    m["inputs"][2].update(shape=["batch", 5]),
                )
            ),
            fixture="forecast_run",
        ),
        ["eval.npz: x.future_day_type of shape [", "do not fit the model's input [batch, 7]"],
        2,
    ),
    (
        "bench_eval_second_input_dtype_edited_with_its_record",
        _bench_tampered(
            _eval_edit(
                lambda a, m: (
                    a.update({"x.past_day_type": a["x.past_day_type"].astype(np.int32)}),
                    m["inputs"][1].update(dtype="int32"),
                )
            ),
            fixture="forecast_run",
        ),
        ["eval.npz: x.past_day_type is int32, but the model takes int64"],
        2,
    ),
    (
        "bench_eval_input_renamed_with_its_record",
        _bench_tampered(_eval_edit(_renamed_input), fixture="forecast_run"),
        ["eval.npz has no x.series, an input", "model.onnx takes"],
        2,
    ),
    (
        "bench_eval_codes_edited_with_their_record",
        _bench_tampered(_eval_edit(_codes_with_their_record), fixture="forecast_run"),
        ["x.past_day_type's record lists the codes", 'but the model\'s rnnforge.day_types are ["W", "A", "U"]'],
        2,
    ),
    (
        "bench_eval_third_input_code_out_of_range",
        _bench_tampered(
            _eval_edit(lambda a, m: a["x.future_day_type"].__setitem__((-1, -1), 7)), fixture="forecast_run"
        ),
        ["x.future_day_type holds code 7, outside the model's codes 0..2 (0 = W, 1 = A, 2 = U)"],
        2,
    ),
    (
        "bench_eval_series_holds_nan",
        _bench_tampered(_eval_edit(lambda a, m: a["x.series"].__setitem__((3, 10, 0), np.nan)), fixture="forecast_run"),
        ["eval.npz: x.series holds NaN or infinity (example 3)"],
        2,
    ),
    (
        "bench_eval_strokes_hold_infinity",
        _bench_tampered(_eval_edit(lambda a, m: a["x"].__setitem__((5, 0, 0), np.inf))),
        ["eval.npz: x holds NaN or infinity (example 5)"],
        2,
    ),
    (
        "bench_eval_reference_of_another_model",
        _bench_tampered(_eval_edit(lambda a, m: a.update(reference=np.ascontiguousarray(a["reference"][:, :7])))),
        ["TensorFlow's stored outputs are [1000, 7], but the model's output probabilities is [batch, 10]"],
        2,
    ),
    (
        "bench_eval_label_beyond_the_classes",
        _bench_tampered(_eval_edit(lambda a, m: a["y"].__setitem__(0, 12))),
        ["eval.npz: y holds label 12, outside the model's classes 0..9"],
        2,
    ),
    (
        "bench_fp16_variant_takes_other_inputs",
        _bench_tampered(_half_precision_inputs, "--variants", "fp32,fp16"),
        ["eval.npz: inputs are float32, but the model takes float16 (", "model.fp16.onnx"],
        2,
    ),
    # issue #27, 3: bench --all checks every run (all files, the examples against the model) before any
    (
        "bench_all_second_run_eval_meta_bad",
        _bench_all_second_run(_eval_edit(lambda a, m: m["input"].update(shape=None))),
        ["b_sketch/eval.npz: meta field /input/shape is null"],
        2,
    ),
    (
        "bench_all_second_run_inputs_do_not_fit",
        _bench_all_second_run(
            _eval_edit(lambda a, m: (a.update(x=a["x"].astype(np.float64)), m["input"].update(dtype="float64")))
        ),
        ["b_sketch/eval.npz: inputs are float64, but the model takes float32"],
        2,
    ),
    (
        "bench_all_second_run_parity_not_json",
        _bench_all_second_run(_json_file("parity.json", lambda p: "[")),
        ["b_sketch/parity.json is not valid JSON"],
        2,
    ),
    (
        "bench_all_second_run_metadata_not_json",
        _bench_all_second_run(_set_run_meta("rnnforge.info", "{")),
        ["b_sketch/model.onnx: metadata rnnforge.info is not JSON"],
        2,
    ),
    (
        "bench_all_second_run_not_exported",
        _bench_all_second_run(_remove("eval.npz")),
        ["b_sketch/eval.npz is missing"],
        2,
    ),
    (
        "bench_report_path_is_a_folder",
        _bench_tampered(
            lambda run: (_earlier_results(run), (run / "bench" / "report.html").mkdir(), run / "bench" / "report.html")[
                2
            ]
        ),
        ["report.html is a folder", "bench's output"],
        2,
    ),
    # issue #22: the warm-ups and the video options
    (
        "patience_start_negative",
        _options("train", "sketch", "--patience-start", "-1"),
        ["--patience-start must be at least 0"],
        2,
    ),
    ("lr_warmup_negative", _options("train", "forecast", "--lr-warmup", "-0.5"), ["--lr-warmup must be at least 0"], 2),
    (
        "difficulty_unknown",
        _options("train", "video", "--difficulty", "medium"),
        ["'--difficulty'", "'medium' is not one of"],
        2,
    ),
    ("augment_for_sketch", _options("train", "sketch", "--augment"), ["--augment does not apply to task 'sketch'"], 2),
]


def _npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((16, 24, 24, 3), np.uint8))
    return buffer.getvalue()


def _tfrecord(folder: Path) -> Path:
    """The tutorial's layout with a training file cut inside its first record."""
    (folder / "training.classes").write_text("cat\ndog\n")
    path = folder / "training.tfrecord-00000-of-00001"
    path.write_bytes(struct.pack("<Q", 4096) + b"\x00" * 20)  # length says 4096 bytes; 20 follow
    return path


#: Cases that start Ray (in this process Ray would outlive the command): a fresh process each.
IN_A_PROCESS = {"gpus_more_than_available"}
#: Cases that train, export or bench a model first (seconds each): ``make test-slow`` runs them.
HEAVY = IN_A_PROCESS | {
    "bench_onnx_other_task",
    "overwrite_with_bad_data",
    "tfrecord_truncated",
    "export_mlflow_uri_from_the_environment_redacted",
    "export_while_storing_the_eval_set",
    "bench_all_while_writing_the_first_results",
    "bench_eval_day_type_out_of_range",
    "export_failed_run",
}


@pytest.mark.parametrize(
    "setup, expected, code",
    [pytest.param(s, e, c, id=i, marks=[pytest.mark.slow] if i in HEAVY else []) for i, s, e, c in CASES],
)
def test_bad_input(setup, expected, code, tmp_path, request):
    runs = Runs(request, tmp_path)
    args, named = setup(tmp_path, runs)
    before = snapshot(tmp_path, *runs.shared)

    run = run_cli_process if request.node.callspec.id in IN_A_PROCESS else run_cli
    result = run(*args, timeout=300)

    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), output
    assert sum(line.startswith("error: ") for line in lines) == 1, output
    line = lines[-1]
    for text in expected:
        assert text in line, line
    if named is not OPTION_ONLY:
        assert str(named) in line, line
    assert snapshot(tmp_path, *runs.shared) == before, "a failed command created, changed or removed files"


def _cli_options(command: click.Command) -> set[str]:
    """Every ``--option`` of ``command`` and its sub-commands."""
    names = {o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--")}
    for sub in getattr(command, "commands", {}).values():
        names |= _cli_options(sub)
    return names


def _range_checked_train_options() -> set[str]:
    """The numeric ``train`` options whose out-of-range values ``resolve_config`` refuses."""
    from rnnforge.core.config import declarations
    from rnnforge.models import TASKS
    from rnnforge.models.resolve import resolve_config

    refused = set()
    for param in rnnforge.cli.cli.commands["train"].params:
        if not isinstance(param, click.Option) or param.type not in (click.INT, click.FLOAT):
            continue
        option = "--" + param.name.replace("_", "-")
        declared = declarations()[param.name]
        for task in TASKS:
            dataset = (declared.tasks or {}).get(task) or (None,)  # the first dataset it applies to
            try:
                resolve_config(task, {param.name: -1, "dataset": dataset[0]})
            except UserError as exc:
                if "does not apply" not in str(exc):
                    assert option in str(exc), exc  # the refusal names the option
                    refused.add(option)
    return refused


def test_the_table_covers_every_checked_option_and_names_real_ones():
    ids = [case[0] for case in CASES]
    assert len(set(ids)) == len(ids), "case ids must be distinct"
    for case_id, _, expected, code in CASES:
        assert expected and all(expected), case_id  # every row checks some text of the error line
        assert code == UserError.exit_code == click.UsageError.exit_code == 2, case_id
    named = {option for _, _, expected, _ in CASES for text in expected for option in re.findall(r"--[a-z0-9-]+", text)}
    assert named <= _cli_options(rnnforge.cli.cli), named - _cli_options(rnnforge.cli.cli)
    checked = _range_checked_train_options()
    assert len(checked) >= 15
    assert checked <= named, f"range-checked options without a bad-input row: {sorted(checked - named)}"
    assert {case[0] for case in CASES} >= IN_A_PROCESS


def test_every_numeric_train_option_is_finite_and_limited():
    """Issue #27, 5: every number 'rnnforge train' takes has an upper bound, and a limit says why
    (--help shows both); infinity and NaN are refused whatever the bounds."""
    from click.testing import CliRunner

    from rnnforge.core.config import declarations, value_type

    shown = " ".join(CliRunner().invoke(rnnforge.cli.cli, ["train", "--help"]).output.split())
    for name, option in declarations().items():
        if value_type(name) in (int, float):
            assert option.maximum is not None or option.limit is not None, name
            assert option.limit is None or option.why, name
            assert not option.cli or option.bound_text() in shown, name
            if value_type(name) is float:
                with pytest.raises(UserError, match="must be a finite number"):
                    option.check(name, float("inf"))


# --- Ctrl-C during train (issue #14, 6), on a real local Ray whose sockets are checked too (9) ---------
# (id, where SIGINT goes): exit 130, one line saying where the run resumes, no Ray process left.

INTERRUPTS = [("sigint_to_the_process_group", "group"), ("sigint_to_the_driver_alone", "driver")]


def _session(sid: int) -> list:
    """Every process of session ``sid`` (the train started with ``start_new_session``)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid:
                found.append(proc)
    return found


def _listening(procs: list) -> dict[str, set[str]]:
    """``{process name: addresses it listens on}``."""
    import psutil

    out: dict[str, set[str]] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.setdefault(proc.name(), set()).add(conn.laddr.ip)
    return out


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _registered_epoch(storage_run: Path) -> int:
    """The epoch of the latest checkpoint Ray Train has registered (0: none yet)."""
    try:
        snapshot = json.loads((storage_run / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["metrics"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("target", [t for _, t in INTERRUPTS], ids=[i for i, _ in INTERRUPTS])
def test_ctrl_c_during_train(tmp_path, target):
    """A terminal's Ctrl-C (the process group) or a SIGINT to the driver alone, after the first
    epoch: exit 130, one line naming the run dir to resume, no Ray process of the run left, and
    while it ran, Ray's own processes (GCS, raylet, agents) listened on loopback only."""
    run_dir = tmp_path / "run"
    # Enough epochs that the run is still training when the signal comes, however fast the machine
    # (3 epochs of 1.4 s each ended before the first checkpoint was seen on a quiet machine).
    args = ["sketch", "--epochs", "50", "--units", "16", "--max-len", "40", "--workers", "2", "--patience", "0"]
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (the process writes it until it ends)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnforge.cli", "train", *args, "--run-dir", run_dir],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    listening: dict[str, set[str]] = {}
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            for name, addresses in _listening(_session(proc.pid)).items():
                listening.setdefault(name, set()).update(addresses)
            log.seek(0)
            if "epoch 1/50" in log.read() and _registered_epoch(run_dir / "checkpoints" / "train"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "train ended before its first epoch"
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
        deadline = time.monotonic() + 30
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [p.name() for p in _session(proc.pid)]
    finally:
        for leftover in _session(proc.pid):
            with contextlib.suppress(Exception):
                leftover.kill()
    log.seek(0)
    output = log.read()
    ray_own = {name: addresses for name, addresses in listening.items() if "RayTrainWorker" not in name}
    assert {"gcs_server", "raylet"} <= set(ray_own), listening
    assert any("DashboardAgent" in name for name in ray_own), listening
    assert all(addresses <= LOOPBACK for addresses in ray_own.values()), listening
    assert code == 130, output[-3000:]
    ours = own_lines(output)
    errors = [line for line in ours if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == output.rstrip().splitlines()[-1], output[-3000:]
    assert f"--run-dir {run_dir}" in errors[0] and "resume" in errors[0]
    assert not any(line.startswith("Traceback") for line in ours), output[-3000:]
    assert left == [], f"Ray processes of the run left behind: {left}"
    assert not (run_dir / "config.json").exists()
    done = _registered_epoch(run_dir / "checkpoints" / "train")
    assert done >= 1, "no checkpoint to resume from"
    # The line's promise (the same command resumes from that checkpoint) is the mechanism that
    # tests/test_cluster.py::test_verbose_rerun_after_the_driver_died_resumes_and_shows_the_machinery proves.


# --- Ctrl-C after training (issue #27, 7): SIGINT inside each later phase, in this process --------
# (id, setup(tmp, runs) -> args, the function that the signal interrupts, expected substrings of the
# line): exit 130, one line saying what is kept and how to resume, no traceback, no file changed.


def _sigint_in(target: str, monkeypatch, request) -> None:
    """``target`` (``module.function``) delivers SIGINT to this process when called, as a Ctrl-C
    in that phase would; Python's own SIGINT handler is installed for the test (a background job
    starts with SIGINT ignored) and put back after it."""
    import importlib

    module, _, name = target.rpartition(".")
    original = getattr(importlib.import_module(module), name)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # KeyboardInterrupt is raised in here
        return original(*args, **kwargs)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    monkeypatch.setattr(target, interrupted)


def _bench_all(tmp: Path, runs: Runs) -> list:
    runs.copy(to="runs/sketch")
    return ["bench", "--all", tmp / "runs", "--batch-sizes", "1", "--runs", "10"]


LATE_INTERRUPTS = [
    (
        "export_while_converting",
        lambda tmp, runs: ["export", "onnx", runs.copy()],
        "rnnforge.export.onnx_export.convert",
        ["interrupted: the export of", "its trained model is untouched", "run 'rnnforge export onnx", "again"],
    ),
    (
        "export_while_storing_the_eval_set",
        lambda tmp, runs: ["export", "onnx", runs.copy(), "--fp16"],
        "rnnforge.export.onnx_export.evaluation_set",
        ["interrupted: the export of", "again for a complete, consistent export"],
    ),
    (
        "bench_while_timing",
        lambda tmp, runs: ["bench", runs.copy(), "--batch-sizes", "1", "--runs", "10"],
        "rnnforge.export.bench.measure_variant",
        ["interrupted: the bench of", "its bench/ folder keeps the earlier ones", "same 'rnnforge bench' command"],
    ),
    (
        "bench_while_timing_tensorflow",
        lambda tmp, runs: ["bench", runs.copy(), "--batch-sizes", "1", "--runs", "10", "--tf-baseline", "measure"],
        "rnnforge.export.bench.tensorflow_baseline",
        ["interrupted: the bench of", "before writing its results"],
    ),
    (
        "bench_while_writing_its_results",
        lambda tmp, runs: ["bench", runs.copy(), "--batch-sizes", "1", "--runs", "10", "--tf-baseline", "none"],
        "rnnforge.export.report.write_report",
        ["interrupted: the bench of", "its bench/ folder keeps the earlier ones"],
    ),
    (
        "bench_all_while_writing_the_first_results",
        _bench_all,
        "rnnforge.export.report.write_report",
        ["interrupted: 'bench --all", "no summary report was written"],
    ),
    (
        "bench_all_while_timing",
        _bench_all,
        "rnnforge.export.bench.measure_variant",
        ["interrupted: 'bench --all", "no summary report was written", "same 'rnnforge bench' command again"],
    ),
]


@pytest.mark.parametrize(
    "setup, target, expected",
    [pytest.param(s, t, e, id=i, marks=[pytest.mark.slow] if i in HEAVY else []) for i, s, t, e in LATE_INTERRUPTS],
)
def test_ctrl_c_after_training(setup, target, expected, tmp_path, request, monkeypatch):
    runs = Runs(request, tmp_path)
    args = setup(tmp_path, runs)
    before = snapshot(tmp_path)
    _sigint_in(target, monkeypatch, request)
    result = run_cli(*args, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 130, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), output
    assert all(text in lines[0] for text in expected), lines[0]
    assert snapshot(tmp_path) == before, "an interrupted command changed files"


@pytest.mark.slow
def test_ctrl_c_while_the_run_dir_is_written_keeps_the_checkpoint(trained_run, tmp_path, request, monkeypatch):
    """After the last epoch: SIGINT while the run dir is written is one line naming the run dir
    to resume, config.json (the mark of a finished run) is not written, and finishing again from
    the same checkpoint (what the rerun does, with no epoch trained again) completes the run dir."""
    import ray.train

    from rnnforge.cluster.launch import finish_interruptibly
    from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from rnnforge.core.config import TrainConfig
    from rnnforge.core.errors import Interrupted
    from rnnforge.core.run_dir import RunDir

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    shutil.copy(trained_run / "model.keras", ckpt / CHECKPOINT_MODEL)
    history = json.loads((trained_run / "metrics.json").read_text())["history"]
    state = {"epoch": 1, "history": history, "restarts": 0, "world_size": 1, "finished": True}
    (ckpt / CHECKPOINT_STATE).write_text(json.dumps(state))
    config = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    _sigint_in("rnnforge.core.plots.training_curve", monkeypatch, request)
    with pytest.raises(Interrupted) as stopped:
        finish_interruptibly(config, run, ray.train.Checkpoint.from_directory(ckpt), 1.0)
    assert str(stopped.value) == (
        f"interrupted while writing the run dir {run.path}: training is over and its final checkpoint is kept; "
        f"run the same 'rnnforge train' command with --run-dir {run.path} to write the run dir from it "
        "(no epoch is trained again)"
    )
    assert Interrupted.exit_code == 130
    assert not run.config.exists(), "an interrupted run must not look finished"
    monkeypatch.undo()
    metrics = finish_interruptibly(config, run, ray.train.Checkpoint.from_directory(ckpt), 1.0)
    assert run.config.is_file() and json.loads(run.metrics.read_text()) == metrics


#: Representative rows whose check needs no dataset (an option of each task, a cluster option, an
#: export option, and files that TensorFlow reads: a corrupt model, a bad clip, a bad .npz): in a
#: fresh process, as a user runs them, the error line is all that stderr holds.
ONLY_LINE_ROWS = (
    "workers_negative",
    "window_zero",
    "frames_zero",
    "workers_more_than_cpus",
    "train_start_not_a_date",
    "export_opset_zero",
    "export_model_corrupt",
    "clip_wrong_shape",
    "npz_nan_values",
)


@pytest.mark.process
@pytest.mark.parametrize("case_id", ONLY_LINE_ROWS)
def test_the_error_line_is_all_of_stderr(case_id, tmp_path, request):
    """No start-up line (TensorFlow's C++ ones go to file descriptor 2) before or after it."""
    setup, expected, code = next((s, e, c) for i, s, e, c in CASES if i == case_id)
    args, _ = setup(tmp_path, Runs(request, tmp_path))
    result = run_cli_process(*args, timeout=300)
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(text in lines[0] for text in expected), lines[0]
