"""Nothing half-written: SIGKILL ``export onnx`` and ``bench`` in the middle of writing an artifact.

The command runs in a subprocess whose ``Path.write_bytes``/``write_text`` write half of the
chosen artifact's temporary file (``.NAME.XXXX.tmp``, see ``rnnforge.core.fileio``), say so, and hang:
the kill lands exactly mid-write, every time. The previous artifacts must be byte-identical and
load; the half-written temp file is a hidden leftover that nothing reads; the next run succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, error_line, run_cli

from rnnforge.core.run_dir import RunDir

pytestmark = pytest.mark.process

STALL = r"""
import os, pathlib, sys, time
target = os.environ["RNNFORGE_TEST_STALL_ON"]

def stalling(original):
    def write(self, data, *args, **kwargs):
        if self.name.startswith("." + target + ".") and ".tmp" in self.name:
            original(self, data[: max(1, len(data) // 2)], *args, **kwargs)
            print("STALLED", self, flush=True)
            time.sleep(600)
        return original(self, data, *args, **kwargs)
    return write

pathlib.Path.write_bytes = stalling(pathlib.Path.write_bytes)
pathlib.Path.write_text = stalling(pathlib.Path.write_text)
from rnnforge.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: Timing is not the point here: ONNX Runtime only (TensorFlow's timing process left out).
FAST_BENCH = ("--batch-sizes", "1", "--warmup", "0", "--runs", "10", "--max-seconds", "0.1", "--tf-baseline", "none")


def kill_mid_write(args, target: str, log: Path, timeout: int = 300) -> Path:
    """Run ``rnnforge ARGS``, SIGKILL it while it writes ``target``'s temp file; the temp file."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALL, *map(str, args)],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "RNNFORGE_TEST_STALL_ON": target},
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            stalled = next((line for line in proc.stdout if line.startswith("STALLED ")), None)
            if stalled:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            watchdog.cancel()
            proc.stdout.close()
    assert stalled, f"the command never wrote {target} (exit {proc.returncode}):\n" + log.read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    return Path(stalled.split(" ", 1)[1].strip())


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_loadable_onnx(path: Path) -> None:
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_leftover(tmp: Path, target: Path) -> None:
    """The killed write left only a hidden, half-written temp file beside its target."""
    assert tmp.parent == target.parent and tmp.name.startswith(f".{target.name}.") and ".tmp" in tmp.name
    assert tmp.is_file() and tmp.stat().st_size > 0


@pytest.fixture
def run_copy(exported_run, tmp_path) -> Path:
    """A private copy of the exported sketch run (the kill tests rewrite its artifacts)."""
    return Path(shutil.copytree(exported_run, tmp_path / "run", ignore=shutil.ignore_patterns("bench", "_ckpt")))


def test_sigkill_during_export_keeps_the_previous_model(run_copy, tmp_path):
    before = files(run_copy)
    tmp = kill_mid_write(["export", "onnx", run_copy], "model.onnx", tmp_path / "export.log")

    assert_leftover(tmp, run_copy / "model.onnx")
    after = files(run_copy)
    leftovers = sorted(set(after) - set(before))
    assert leftovers == [tmp.name]
    assert {k: v for k, v in after.items() if k in before} == before  # every artifact byte-identical
    assert_loadable_onnx(run_copy / "model.onnx")
    assert json.loads((run_copy / "parity.json").read_text())["passed"] is True

    result = run_cli("export", "onnx", run_copy)  # the next run succeeds despite the leftover
    assert result.returncode == 0, result.stderr[-3000:]
    assert_loadable_onnx(run_copy / "model.onnx")
    assert json.loads((run_copy / "parity.json").read_text())["passed"] is True
    bench = run_cli("bench", run_copy, *FAST_BENCH)  # and bench takes the new model, ignoring the leftover
    assert bench.returncode == 0, bench.stderr[-3000:]


def test_sigkill_during_the_eval_set_keeps_the_previous_one(run_copy, tmp_path):
    before = files(run_copy)
    tmp = kill_mid_write(["export", "onnx", run_copy], "eval.npz", tmp_path / "export.log")

    assert_leftover(tmp, run_copy / "eval.npz")
    after = files(run_copy)
    assert sorted(set(after) - set(before)) == [tmp.name]
    assert after["eval.npz"] == before["eval.npz"] and after["parity.json"] == before["parity.json"]
    assert_loadable_onnx(run_copy / "model.onnx")  # the new model, written just before
    # This copy's new model names this run dir as its source; the old eval set names the run it was copied from:
    line = error_line(run_cli("bench", run_copy, *FAST_BENCH))
    assert f"{run_copy / 'eval.npz'} was written for the run exported from" in line and "re-run" in line

    result = run_cli("export", "onnx", run_copy)  # the next export succeeds despite the leftover
    assert result.returncode == 0, result.stderr[-3000:]
    bench = run_cli("bench", run_copy, *FAST_BENCH)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert json.loads((run_copy / "bench" / "bench.json").read_text())["accuracy"]["examples"] == 1000


def test_sigkill_during_bench_keeps_the_previous_report(run_copy, tmp_path):
    """bench writes its results as one set (issue #27, 3): into a hidden folder beside bench/, moved
    in only once every file is written. Killed while writing bench.json there, bench/ is exactly as
    it was, plots and report included; the staged folder is the hidden leftover."""
    first = run_cli("bench", run_copy, *FAST_BENCH)
    assert first.returncode == 0, first.stderr[-3000:]
    out = run_copy / "bench"
    before = files(out)
    tmp = kill_mid_write(["bench", run_copy, *FAST_BENCH], "bench.json", tmp_path / "bench.log")

    stage = tmp.parent
    assert stage.parent == run_copy and stage.name.startswith(".bench.") and stage.name.endswith(".tmp")
    assert tmp.name.startswith(".bench.json.") and tmp.stat().st_size > 0
    assert files(out) == before  # every file of the earlier set, byte for byte
    assert json.loads(before["bench.json"])["task"] == "sketch"
    assert stage in RunDir(run_copy).artifacts()  # --overwrite removes it

    again = run_cli("bench", run_copy, *FAST_BENCH)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "bench.json").read_text())["task"] == "sketch"
    assert (out / "bench.json").read_bytes() != before["bench.json"]
