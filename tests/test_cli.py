"""The CLI as users call it: help without heavy imports, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, error_line, run_cli

COMMANDS = [[], ["train"], ["export"], ["export", "onnx"], ["bench"], ["bench", "run"], ["bench", "compare"], ["demo"]]


def test_every_help_is_light():
    """``--help`` of every command works and imports no TensorFlow, Ray or ONNX Runtime."""
    script = (
        "import sys\n"
        "from rnnforge.cli import main\n"
        f"for args in {COMMANDS!r}:\n"
        "    assert main(args + ['--help']) == 0, args\n"
        "heavy = [m for m in ('tensorflow', 'ray', 'onnxruntime', 'tf2onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage: rnnforge train [OPTIONS] TASK" in result.stdout and "TASK is one of: sketch" in result.stdout
    assert "--gpus-per-worker" in result.stdout and "--provider [cpu|cuda|tensorrt]" in result.stdout
    assert "rnnforge bench compare A.json B.json" in result.stdout and "--threshold FLOAT" in result.stdout
    assert result.stdout.rstrip().endswith("ok")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "pottery"], "Invalid value for 'TASK': 'pottery' is not"),
        (["train", "sketch", "--dataset", "imagenet"], "unknown dataset 'imagenet' for task 'sketch' (--dataset)"),
        (["train", "sketch", "--workers", "0"], "--workers must be at least 1"),
        (["train", "sketch", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["export", "onnx", "/nonexistent/run"], "run dir /nonexistent/run does not exist"),
        (["bench", "/nonexistent/run"], "run dir /nonexistent/run does not exist"),
        (["bench", "runs", "--batch-sizes", "1,x"], "expected comma-separated integers"),
        (["demo", "--tasks", "sketch,pottery"], "unknown task(s) pottery"),
    ],
)
def test_bad_input_gets_one_line(args, expected):
    line = error_line(run_cli(*args))
    assert expected in line


def test_run_dir_without_config_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    line = error_line(run_cli("export", "onnx", tmp_path))
    assert f"{tmp_path / 'config.json'} is missing" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_corrupt_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert f"{tmp_path / 'config.json'} is not valid JSON" in error_line(run_cli("bench", tmp_path))


def test_finished_run_is_not_overwritten(trained_run):
    before = (trained_run / "model.keras").stat().st_mtime_ns
    line = error_line(run_cli("train", "sketch", "--run-dir", trained_run))
    assert "already holds a finished run; pass --overwrite" in line
    assert (trained_run / "model.keras").stat().st_mtime_ns == before


def test_debug_shows_traceback():
    result = run_cli("--debug", "export", "onnx", "/nonexistent/run")
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("rnnforge.core.errors.UserError: run dir /nonexistent/run does not exist"), last
    assert not any(line.startswith("error: ") for line in result.stderr.splitlines())
