"""The GPU proof script (benchmarks/gpu_bench.py) as far as a CPU allows: its CPU half runs to a
summary, and asked for CUDA where there is none it stops with exit 4, never a CPU figure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, copy_run, snapshot

pytestmark = pytest.mark.process

SCRIPT = ROOT / "benchmarks" / "gpu_bench.py"
FAST = ("--batch-sizes", "1,2", "--max-seconds", "0.1", "--runs", "10", "--variants", "fp32")


def gpu_bench(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cpu_half_writes_the_summary_and_leaves_the_runs_alone(exported_run, forecast_run, tmp_path):
    runs = tmp_path / "runs"
    copy_run(exported_run, runs / "sketch")
    copy_run(forecast_run, runs / "forecast")  # three named inputs (series and day types)
    before = sorted(p.name for p in (runs / "sketch").iterdir())
    result = gpu_bench(runs, "--out", tmp_path / "out", "--cpu-only", *FAST)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "no CUDA figures" in summary
    for run in ("sketch", "forecast"):
        assert f"| {run} | onnxruntime | cpu |" in summary
        assert f"| {run} | CPUExecutionProvider |" in summary  # node events from ORT's profiler
        assert f"![{run}]({run}_latency.png)" in summary and (tmp_path / "out" / f"{run}_latency.png").stat().st_size
    combined = json.loads((tmp_path / "out" / "cpu" / "bench_all.json").read_text())
    assert combined["sketch"]["provider"]["session_providers"][0] == "CPUExecutionProvider"
    assert sorted(p.name for p in (runs / "sketch").iterdir()) == before  # the script benches copies


def test_runs_without_the_fp16_export_are_refused_first(exported_run, tmp_path):
    runs = tmp_path / "runs"
    copy_run(exported_run, runs / "sketch")
    result = gpu_bench(runs, "--out", tmp_path / "out", "--cpu-only")
    assert result.returncode == 2 and "sketch has no model.fp16.onnx" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_cuda_where_there_is_none_stops_with_exit_4(exported_run, tmp_path):
    import onnxruntime

    runs = tmp_path / "runs"
    copy_run(exported_run, runs / "sketch")
    result = gpu_bench(runs, "--out", tmp_path / "out", *FAST)
    assert (
        "CUDAExecutionProvider"
        not in onnxruntime.InferenceSession(
            str(runs / "sketch" / "model.onnx"), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        ).get_providers()
    ), "this machine has a usable GPU: the refusal cannot be tested here"
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "gpu_bench: CUDA is not usable here: error: --provider cuda" in result.stderr
    assert not (tmp_path / "out" / "cuda" / "bench_all.json").exists()
    assert not (tmp_path / "out" / "summary.md").exists()
    shutil.rmtree(tmp_path / "out")


SHIP = ROOT / "benchmarks" / "gpu_ship.sh"


def ship(*args, ship_dir, pip: str | None = None) -> subprocess.CompletedProcess:
    """``gpu_ship.sh ARGS`` run in ``ship_dir`` (pack's .gpu/ goes there), GPU_SHIP_DIR=ship_dir;
    ``pip``: the PIP command pack downloads with."""
    env = {**os.environ, "GPU_SHIP_DIR": str(ship_dir), **({"PIP": pip} if pip else {})}
    return subprocess.run(
        ["bash", SHIP, *map(str, args)], capture_output=True, text=True, env=env, timeout=120, cwd=ship_dir
    )


def test_the_upload_parts_join_to_the_checked_archive_and_unpack(tmp_path):
    stage = tmp_path / "stage"
    (stage / "site" / "onnxruntime").mkdir(parents=True)
    (stage / "site" / "onnxruntime" / "__init__.py").write_text("# stand-in\n")
    (stage / "runs" / "sketch").mkdir(parents=True)
    (stage / "runs" / "sketch" / "model.onnx").write_bytes(os.urandom(300_000))
    archive = tmp_path / "ship.tar.xz"
    subprocess.run(f"tar -C {stage} -cf - site runs | xz -1 > {archive}", shell=True, check=True)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    subprocess.run(["split", "-b", "100K", "-d", archive, tmp_path / "part-"], check=True)
    parts = sorted(tmp_path.glob("part-*"))
    there = tmp_path / "there"
    there.mkdir()
    assert len(parts) >= 3
    for part in parts[:-1]:
        assert ship("append", part, ship_dir=there).returncode == 0
    early = ship("unpack", digest, ship_dir=there)  # a part still missing
    assert early.returncode == 2 and "a part is missing or doubled" in early.stderr
    assert not (there / "ship").exists()
    assert ship("append", parts[-1], ship_dir=there).returncode == 0
    done = ship("unpack", digest, ship_dir=there)
    assert done.returncode == 0, done.stderr
    assert (there / "ship" / "runs" / "sketch" / "model.onnx").read_bytes() == (
        stage / "runs" / "sketch" / "model.onnx"
    ).read_bytes()
    assert (there / "ship" / "site" / "onnxruntime" / "__init__.py").is_file()


def test_pack_refuses_runs_without_the_fp16_variant_before_downloading(exported_run, tmp_path):
    runs = tmp_path / "runs"
    copy_run(exported_run, runs / "sketch")
    result = ship("pack", runs, ship_dir=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: {runs / 'sketch'} has no model.fp16.onnx: run 'rnnforge export onnx {runs / 'sketch'} --fp16' first"
    )
    empty = ship("pack", tmp_path / "nothing", ship_dir=tmp_path)
    assert empty.returncode == 2 and "is not a folder of exported runs" in empty.stderr


def test_the_gpu_steps_bench_each_variant_and_option_alone(exported_run, tmp_path, monkeypatch):
    """The CUDA graph and provider-option steps (which need a GPU to run) as commands: one bench
    per run and variant or option, a refusal recorded in its place, the rest kept."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    runs = tmp_path / "runs"
    copy_run(exported_run, runs / "sketch")
    calls = []

    def fake_rnnforge(args, log):
        calls.append([str(a) for a in args])
        crashed = "fp16" in args or "prefer_nhwc=1" in args
        if not crashed:
            (runs / "sketch" / "bench").mkdir(exist_ok=True)
            (runs / "sketch" / "bench" / "bench.json").write_text("{}")
        return subprocess.CompletedProcess(args, 7 if crashed else 0, "", "error: it died\n" if crashed else "")

    monkeypatch.setattr(script, "rnnforge", fake_rnnforge)
    settings = ["--batch-sizes", "1,8,32,256", "--max-seconds", "1.5", "--runs", "200", "--variants", "fp32,fp16"]
    graphs = script.cuda_graph_step(runs, tmp_path / "out", settings, ["fp32", "fp16"])
    assert graphs == {"sketch": {"fp32": "cuda_graph/sketch-fp32/bench.json", "fp16": "not possible: error: it died"}}
    assert calls[0][calls[0].index("--variants") + 1] == "fp32" and "--cuda-graph" in calls[0]
    calls.clear()
    levers = script.levers_step(runs, tmp_path / "out", settings)
    assert list(levers["sketch"]) == list(script.CUDA_LEVERS)
    assert levers["sketch"]["prefer_nhwc=1"] == "not possible: error: it died"
    assert levers["sketch"]["use_tf32=0"] == "levers/sketch/use_tf32-0/bench.json"
    for call, lever in zip(calls, script.CUDA_LEVERS):
        assert call[call.index("--provider-option") + 1] == lever
        assert call[call.index("--batch-sizes") + 1] == "1,256" and call[call.index("--variants") + 1] == "fp32"
    assert (tmp_path / "out" / "levers" / "sketch" / "use_tf32-0" / "bench.json").is_file()


# --- gpu_ship.sh refuses bad arguments in one line (issue #27, 8) ------------------------------
# (id, arguments after the script ({tmp}: the ship dir), the PIP it downloads with, expected text)

FAKE_PIP = """#!/bin/sh
# pip download's stand-in: one small wheel into the -d folder
while [ $# -gt 0 ]; do [ "$1" = -d ] && folder=$2; shift; done
mkdir -p "$folder"
exec python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1], "w").writestr("onnxruntime/__init__.py", "# x")' \\
    "$folder/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
"""
FAILING_PIP = """#!/bin/sh
echo "ERROR: Could not find a version that satisfies the requirement onnxruntime-gpu==1.31.1" >&2
exit 1
"""

SHIP_REFUSALS = [
    ("no_command", [], None, "usage:"),
    ("append_without_part", ["append"], None, "append takes one PART"),
    ("append_missing_part", ["append", "{tmp}/ship.part-07"], None, "ship.part-07 is not a readable file"),
    ("append_two_parts", ["append", "{tmp}/runs", "{tmp}/runs"], None, "append takes one PART"),
    ("unpack_without_sha", ["unpack"], None, "unpack takes the SHA256 that 'pack' printed"),
    ("unpack_not_a_sha", ["unpack", "abc"], None, "'abc' is not a sha256 (64 hex digits"),
    ("unpack_without_archive", ["unpack", "0" * 64], None, "ship.tar.xz does not exist: append the parts first"),
    ("pack_without_runs", ["pack"], None, "pack takes RUNS_DIR [PART_MB]"),
    ("pack_part_size_not_a_number", ["pack", "{tmp}/runs", "60MB"], None, "PART_MB must be a whole number"),
    ("pack_part_size_zero", ["pack", "{tmp}/runs", "0"], None, "got '0'"),
    ("pack_download_fails", ["pack", "{tmp}/runs"], FAILING_PIP, "the previous parts are kept: ERROR: Could not"),
]


def _ship_dir(tmp_path: Path) -> Path:
    """A ship dir holding a run with both variants and the parts of an earlier pack."""
    (tmp_path / "runs" / "sketch").mkdir(parents=True)
    for name in ("model.onnx", "model.fp16.onnx"):
        (tmp_path / "runs" / "sketch" / name).write_bytes(b"onnx")
    (tmp_path / ".gpu").mkdir()
    for name, text in (("ship.part-00", "old part 0"), ("ship.part-01", "old part 1"), ("ship.sha256", "0" * 64)):
        (tmp_path / ".gpu" / name).write_text(text)
    return tmp_path


def _pip(tmp_path: Path, script: str) -> str:
    path = tmp_path / "pip"
    path.write_text(script)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("args, pip, expected", [pytest.param(a, p, e, id=i) for i, a, p, e in SHIP_REFUSALS])
def test_gpu_ship_refuses_in_one_line_and_keeps_the_old_parts(args, pip, expected, tmp_path):
    there = _ship_dir(tmp_path / "ship")
    before = snapshot(there)
    result = ship(*[a.replace("{tmp}", str(there)) for a in args], ship_dir=there, pip=pip and _pip(tmp_path, pip))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not any(raw in result.stderr for raw in ("unbound variable", "cat:", "sha256sum:", "tar:")), result.stderr
    assert snapshot(there) == before, "a refused command changed files"


def test_pack_replaces_the_old_parts_with_a_complete_set(tmp_path):
    there = _ship_dir(tmp_path / "ship")
    (there / ".gpu" / "ship.part-05").write_text("a stale part of an older, longer pack")
    result = ship("pack", there / "runs", "1", ship_dir=there, pip=_pip(tmp_path, FAKE_PIP))
    assert result.returncode == 0, result.stderr
    parts = sorted((there / ".gpu").glob("ship.part-*"))
    assert [p.name for p in parts] == ["ship.part-00"] and not (there / ".gpu" / "new").exists()
    digest = (there / ".gpu" / "ship.sha256").read_text().strip()
    assert hashlib.sha256(parts[0].read_bytes()).hexdigest() == digest
    target = tmp_path / "target"
    target.mkdir()
    assert ship("append", parts[0], ship_dir=target).returncode == 0
    done = ship("unpack", digest.upper(), ship_dir=target)
    assert done.returncode == 0, done.stderr
    assert (target / "ship" / "site" / "onnxruntime" / "__init__.py").is_file()
    assert (target / "ship" / "runs" / "sketch" / "model.fp16.onnx").read_bytes() == b"onnx"


# --- gpu_serving.sh: the serving proof's script, rehearsed on the CPU ------------------------------

SERVING = ROOT / "benchmarks" / "gpu_serving.sh"


def gpu_serving(*args, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", SERVING, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_gpu_serving_benches_and_searches_each_run_and_packs_the_results(exported_run, tmp_path):
    import tarfile

    runs, out = tmp_path / "runs", tmp_path / "out"
    copy_run(exported_run, runs / "sketch")
    before = snapshot(runs / "sketch")
    result = gpu_serving(  # the script's steps and files are the point, not TensorFlow's timing
        runs, out, "cpu", VARIANTS="fp32", SEARCH_SECONDS="4", BATCH_SIZES="1,32", TF_BASELINE="none"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    assert "bench: exit 0" in summary and "load_sketch: exit 0" in summary, summary
    with tarfile.open(out / "serving.tar.xz") as archive:
        names = set(archive.getnames())
    assert {"summary.txt", "machine.txt", "logs/bench.log", "runs/sketch/bench/load.json"} <= names
    assert "runs/sketch/bench/serving.json" in names and not any(n.endswith(".onnx") for n in names)
    assert snapshot(runs / "sketch") == before  # the script searches copies


@pytest.mark.parametrize(
    "args, says",
    [
        ((), "usage"),
        (("{tmp}/none", "{tmp}/out"), "is not a folder of exported runs"),
        (("{tmp}", "{tmp}/out", "rocm"), "PROVIDER must be cuda or cpu"),
    ],
)
def test_gpu_serving_refuses_bad_arguments_in_one_line(args, says, tmp_path):
    result = gpu_serving(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
