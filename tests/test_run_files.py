"""The run-dir reader (``rnnforge.core.run_files``): the schemas, the one-line messages, eval.npz
read header first, the stored examples against the model, and bench's results written as one set.

The CLI rows for each class of bad run-dir file are in ``tests/test_bad_input.py``'s table; these
are the reader's own units, and the files real runs write checked against their schemas.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import types
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_run, rewrite_eval_set, run_cli, snapshot

from rnnforge.core import fileio, run_files
from rnnforge.core.errors import UserError
from rnnforge.core.run_files import RunFileError, read_eval_set, read_json, read_onnx

SCHEMA_FILES = sorted(run_files.SCHEMAS.glob("*.schema.json"))


# --- the schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_each_shipped_schema_is_a_valid_json_schema_named_by_its_file(path):
    from jsonschema import Draft202012Validator

    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == run_files.BASE_URI + path.name
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["title"]


def test_the_config_schema_declares_every_train_option_with_its_type():
    """config.json's schema and ``TrainConfig`` stay in step: each option, its JSON type, null
    where the option may be unset."""
    from rnnforge.core.config import TrainConfig, value_type

    words = {int: "integer", float: "number", str: "string", bool: "boolean", tuple: "array"}
    declared = run_files.load_schema("config")["properties"]
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if "option" not in field.metadata or field.name == "dataset":
            continue
        hint = hints[field.name]
        nullable = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
        want = [words[value_type(field.name)], "null"] if nullable else words[value_type(field.name)]
        assert field.name in declared, (
            f"add the train option {field.name!r} to rnnforge/core/schemas/config.schema.json"
        )
        assert declared[field.name]["type"] == want, field.name


def test_the_files_real_runs_write_follow_their_schemas(exported_run, forecast_run):
    from rnnforge.models import TASKS

    for run in (exported_run, forecast_run):
        run_files.read_config(run / "config.json", TASKS)
        run_files.read_metrics(run / "metrics.json")
        run_files.read_parity(run / "parity.json")
        model = read_onnx(run / "model.onnx")
        assert model.values["rnnforge.info"] == json.loads((run / "config.json").read_text())["info"]
        labels = "forecast" if run == forecast_run else "classification"
        codes = {"past_day_type": "day_types", "future_day_type": "day_types"} if run == forecast_run else {}
        eval_set = read_eval_set(run / "eval.npz", models=[model], codes=codes, labels=labels)
        assert eval_set.meta["format"] == 1
    assert read_onnx(forecast_run / "model.onnx").codes("day_types") == ["W", "A", "U"]


# --- messages ------------------------------------------------------------------------------------


def _schema(tmp_path: Path, schema: dict) -> Path:
    path = tmp_path / "s.schema.json"
    path.write_text(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}))
    return path


OBJECT = {
    "type": "object",
    "required": ["a"],
    "properties": {
        "a": {"type": "integer", "minimum": 1},
        "b": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1},
        "c": {"type": "object", "additionalProperties": False, "properties": {"d": {"const": 3}}},
        "e": {"type": "string", "pattern": "^[0-9a-f]+$"},
    },
}


@pytest.mark.parametrize(
    "data, expected",
    [
        ({}, "field /a is missing"),
        ([], "the top level is a list, expected an object"),
        ({"a": "one"}, 'field /a is a string ("one"), expected an integer'),
        ({"a": True}, "field /a is a boolean, expected an integer"),
        ({"a": 0}, "field /a is 0, expected at least 1"),
        ({"a": 1, "b": []}, "field /b has 0 item(s), expected at least 1"),
        ({"a": 1, "b": ["x", "z"]}, 'field /b/1 is "z", expected one of "x", "y"'),
        ({"a": 1, "c": {"d": 4}}, "field /c/d is 4, expected 3"),
        ({"a": 1, "c": {"d": 3, "f": 1}}, "field /c/f is not expected here"),
        ({"a": 1, "e": "XYZ"}, 'field /e is "XYZ", expected text matching ^[0-9a-f]+$'),
        ({"a": "w" * 500}, 'field /a is a string ("' + "w" * 56 + "...), expected an integer"),
    ],
)
def test_a_violation_is_named_by_its_field(tmp_path, data, expected):
    assert run_files.problem(data, _schema(tmp_path, OBJECT)) == expected


def test_a_field_name_is_escaped_as_a_json_pointer():
    assert run_files.pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"


def test_read_json_refuses_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    with pytest.raises(RunFileError, match="f.json does not exist; look here"):
        read_json(path, hint="look here")
    path.mkdir()
    with pytest.raises(RunFileError, match="is a folder, not a file"):
        read_json(path)
    path.rmdir()
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RunFileError, match="is not valid JSON: not UTF-8 text"):
        read_json(path)
    path.write_text('{"a": ')
    with pytest.raises(RunFileError, match=r"is not valid JSON: Expecting value"):
        read_json(path)
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')  # a BOM, as a Windows editor leaves it
    assert read_json(path) == {"a": 1}
    monkeypatch.setattr(run_files, "MAX_JSON_BYTES", 4)
    with pytest.raises(RunFileError, match="more than the 0 MiB any rnnforge JSON file takes"):
        read_json(path)


def test_a_tf_timing_of_another_model_is_named_before_its_fields(tmp_path):
    path = tmp_path / "tf_timing.json"
    path.write_text(json.dumps({"task": "sketch", "source_run": "/elsewhere", "rows": "none"}))
    with pytest.raises(RunFileError, match="was recorded for the sketch model exported from /elsewhere"):
        run_files.read_tf_timing(path, "sketch", "/here")
    with pytest.raises(RunFileError, match="field /recorded_at is missing; not a readable TensorFlow timing"):
        run_files.read_tf_timing(path, "sketch", "/elsewhere")


def test_metrics_name_a_companion_without_its_scores(tmp_path, exported_run):
    metrics = json.loads((exported_run / "metrics.json").read_text())
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**metrics, "companions": ["ensemble"]}))
    with pytest.raises(RunFileError, match="field /ensemble \\(companions names it\\) is missing"):
        run_files.read_metrics(path)
    path.write_text(json.dumps({**metrics, "companions": ["ensemble"], "ensemble": {"valid": {}, "test": {}}}))
    with pytest.raises(RunFileError, match="field /ensemble/valid/examples is missing"):
        run_files.read_metrics(path)


# --- eval.npz: headers before arrays, and against the model ------------------------------------------


def _never_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an array was read")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)


def test_eval_arrays_beyond_the_memory_bound_are_refused_before_any_is_read(exported_run, monkeypatch):
    _never_read(monkeypatch)
    with pytest.raises(RunFileError) as refused:
        read_eval_set(exported_run / "eval.npz", "sketch", memory=2_000_000)
    assert "its arrays need" in str(refused.value) and "(x: float32 [1000, 100, 3])" in str(refused.value)
    assert "this machine has 2,000,000 bytes available and bench keeps within half of it" in str(refused.value)


def _with_member(source: Path, target: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(source) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = data
    with zipfile.ZipFile(target, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return target


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_a_header_declaring_more_than_its_member_holds_is_refused_unread(exported_run, tmp_path, monkeypatch):
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 100, 3)}
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    path = _with_member(exported_run / "eval.npz", tmp_path / "eval.npz", "y.npy", stream.getvalue() + b"\0" * 64)
    _never_read(monkeypatch)
    with pytest.raises(RunFileError, match=r"y's header declares float32 \[1000000000000, 100, 3\] \(1,200,000.0 GB\)"):
        read_eval_set(path)


def test_an_object_array_is_refused_from_its_header(exported_run, tmp_path, monkeypatch):
    path = _with_member(exported_run / "eval.npz", tmp_path / "eval.npz", "y.npy", _npy(np.array([{}], dtype=object)))
    _never_read(monkeypatch)
    with pytest.raises(RunFileError, match="y holds Python objects, expected numbers"):
        read_eval_set(path)


def _tampered_eval(run: Path, edit) -> Path:
    return rewrite_eval_set(run / "eval.npz", edit)


FORECAST_CODES = {"past_day_type": "day_types", "future_day_type": "day_types"}


def _future_as_int32(arrays, meta):
    arrays["x.future_day_type"] = arrays["x.future_day_type"].astype(np.int32)
    meta["inputs"][2]["dtype"] = "int32"


def _future_code(arrays, meta):
    arrays["x.future_day_type"][-1, -1] = 7


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_future_as_int32, "x.future_day_type is int32, but the model takes int64"),
        (_future_code, "x.future_day_type holds code 7, outside the model's codes 0..2 (0 = W, 1 = A, 2 = U)"),
        (lambda a, m: a["y"].__setitem__((0, 0), np.inf), "y holds NaN or infinity (example 0)"),
        (lambda a, m: a.update(y=a["y"][:, :1]), "y is float32 ["),
    ],
    ids=["dtype_of_the_third_input", "code_of_the_third_input", "infinite_label", "labels_not_the_outputs_shape"],
)
def test_every_stored_input_is_checked_against_the_model(forecast_run, tmp_path, edit, expected):
    run = copy_run(forecast_run, tmp_path / "forecast")
    path = _tampered_eval(run, edit)
    with pytest.raises(RunFileError) as refused:
        read_eval_set(path, models=[read_onnx(run / "model.onnx")], codes=FORECAST_CODES, labels="forecast")
    assert expected in str(refused.value)


def test_a_symbolic_axis_must_be_one_size_across_inputs(tmp_path):
    """Two inputs sharing the axis ``time`` must agree on its length."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["out"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "time"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", "time"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "time"])],
    )
    model = run_files.OnnxFile(
        Path("m.onnx"),
        None,
        {},
        {},
        *(tuple(f(helper.make_model(graph))) for f in (run_files.model_inputs, run_files.model_outputs)),
    )
    records = [{"name": n, "dtype": "float32", "shape": ["batch", t]} for n, t in (("a", 5), ("b", 6))]
    meta = {
        "format": 1,
        "task": "t",
        "source_run": "/r",
        "split": "test",
        "examples_in_split": 2,
        "info": {},
        "inputs": records,
    }
    path = tmp_path / "eval.npz"
    np.savez(
        path,
        **{"x.a": np.zeros((2, 5), np.float32), "x.b": np.zeros((2, 6), np.float32)},
        y=np.zeros(2),
        reference=np.zeros((2, 5), np.float32),
        meta=np.array(json.dumps(meta)),
    )
    with pytest.raises(RunFileError, match="x.b has 6 along the model's axis 'time', x.a has 5"):
        read_eval_set(path, models=[model])


def test_a_feed_onnx_runtime_refuses_is_the_inputs_fault_not_a_crash(exported_run, tmp_path):
    """Past bench's checks (here: a timing process given an eval set the model does not take), ONNX
    Runtime's InvalidArgument becomes a UserError (exit 2) naming the eval set, never exit 7."""
    from rnnforge.export.measure import Job, main
    from rnnforge.export.settings import BenchSettings

    run = copy_run(exported_run, tmp_path / "run")

    def four_columns(arrays, meta):
        arrays["x"] = np.concatenate([arrays["x"], arrays["x"][..., :1]], axis=-1)
        meta["input"]["shape"][-1] = 4

    _tampered_eval(run, four_columns)
    setup = {
        "name": "cpu",
        "providers": ["CPUExecutionProvider"],
        "io_binding": False,
        "device": "cpu",
        "cuda_graph": False,
        "requested": {},
    }
    settings = BenchSettings(batch_sizes=(1,), runs=10, warmup=0, max_seconds=0.1).checked().to_dict()
    job = Job("onnxruntime", str(run / "model.onnx"), str(run / "eval.npz"), "sketch", settings, setup)
    request = tmp_path / "job.json"
    request.write_text(json.dumps({"job": dataclasses.asdict(job), "result": str(tmp_path / "result.json")}))
    assert main([str(request)]) == 2
    error = json.loads((tmp_path / "result.json").read_text())["error"]
    assert error["type"] == "UserError"
    assert error["message"].startswith(f"{run / 'eval.npz'}: ONNX Runtime refused its inputs for {run / 'model.onnx'}")


# --- results written as one set ------------------------------------------------------------------------


def test_a_staged_set_replaces_its_files_and_keeps_the_others(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    for name, text in (("bench.json", "old"), ("stale.png", "old"), ("serving.json", "kept")):
        (folder / name).write_text(text)
    with fileio.staged_files(folder, replaces=("bench.json", "stale.png"), last=("bench.json",)) as out:
        assert out.parent == tmp_path and out.name.startswith(".bench.") and out.name.endswith(".tmp")
        (out / "bench.json").write_text("new")
        (out / "report.md").write_text("new")
    assert {p.name: p.read_text() for p in folder.iterdir()} == {
        "bench.json": "new",
        "report.md": "new",
        "serving.json": "kept",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]


def test_a_failing_or_interrupted_set_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "bench.json").write_text("old")
    before = snapshot(tmp_path)
    for error in (UserError("the report failed"), KeyboardInterrupt()):
        with pytest.raises(type(error)), fileio.staged_files(folder, replaces=("bench.json",)) as out:
            (out / "bench.json").write_text("new")
            raise error
        assert snapshot(tmp_path) == before
    with fileio.staged_files(tmp_path / "new") as out:  # a new folder: the staged one, renamed
        (out / "a").write_text("a")
    assert (tmp_path / "new" / "a").read_text() == "a" and oct((tmp_path / "new").stat().st_mode & 0o777) != "0o700"


def test_ctrl_c_while_the_set_moves_in_waits_until_it_is_in(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        moved = []
        with pytest.raises(KeyboardInterrupt), fileio.ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            moved.append("every file")  # still runs: the signal waits for the block's end
        assert moved == ["every file"]
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_bench_failing_while_writing_its_report_keeps_the_earlier_results(exported_run, tmp_path, monkeypatch):
    """Issue #27, 3: bench replaced bench.json and the plots, then failed rendering the report,
    leaving the old report beside the new JSON. Now every file of the set is in place or none is."""
    run = copy_run(exported_run, tmp_path / "run")
    fast = ("--batch-sizes", "1", "--runs", "10", "--warmup", "0", "--max-seconds", "0.1", "--tf-baseline", "none")
    assert run_cli("bench", run, *fast).returncode == 0
    before = snapshot(tmp_path)

    def broken(*args, **kwargs):
        raise UserError("the report could not be rendered")

    monkeypatch.setattr("rnnforge.export.report.bench_markdown", broken)
    failed = run_cli("bench", run, *fast)
    assert failed.returncode == 2 and "the report could not be rendered" in failed.stderr
    assert snapshot(tmp_path) == before, "bench/ changed although the bench failed"
    monkeypatch.undo()
    assert run_cli("bench", run, *fast).returncode == 0
    assert json.loads((run / "bench" / "bench.json").read_text())["task"] == "sketch"
    assert not list(run.glob(".bench.*")), "a staged folder was left behind"
    shutil.rmtree(run / "bench")
