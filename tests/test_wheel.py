"""The wheel users install: built from the tree, installed outside it, run without the training stack.

``make`` installs the project editable, which hides a package list that forgets a sub-package or
a data file; these tests build the real wheel, install it into a folder of its own and run it
from another directory, with TensorFlow, Ray and tf2onnx blocked as on an inference box.
"""

from __future__ import annotations

import email
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, blocking_env
from packaging.requirements import Requirement

pytestmark = pytest.mark.process

#: Source folder -> where the wheel puts it (pyproject.toml's package-dir).
SHIPPED = {
    "rnnforge": "rnnforge",
    "cluster": "rnnforge/cluster",
    "pipeline": "rnnforge/pipeline",
    "models": "rnnforge/models",
    "export": "rnnforge/export",
}
TRAINING_STACK = ("tensorflow", "tf-keras", "tensorflow-datasets", "ray", "tf2onnx", "pandas", "pyarrow")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            out,
            ROOT,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("rnnforge-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed with ``pip install --target`` (no dependencies: the venv has them)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``rnnforge ARGS`` from the installed wheel, outside the source tree, training stack blocked."""
    script = (
        "import sys\n"
        "import rnnforge, rnnforge.models\n"
        f"assert rnnforge.__file__.startswith({str(site)!r}), rnnforge.__file__\n"
        f"assert rnnforge.models.__file__.startswith({str(site)!r}), rnnforge.models.__file__\n"
        "from rnnforge.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = blocking_env(cwd / "inference_python", path=(site,))
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_the_wheel_ships_one_package_with_every_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names}
    assert top == {"rnnforge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    missing = []
    for folder, package in SHIPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                shipped = f"{package}/{path.relative_to(ROOT / folder).as_posix()}"
                if shipped not in names:
                    missing.append(shipped)
    assert not missing, missing
    assert "rnnforge/export/bench.schema.json" in names and "rnnforge/pipeline/sketch_rnn/__init__.py" in names
    assert "rnnforge/core/schemas/eval_meta.schema.json" in names  # the run-dir schemas (core/run_files.py)


def test_a_plain_install_is_the_serving_half(wheel):
    """``pip install rnnforge`` brings ONNX Runtime and the report libraries; ``[train]`` the rest,
    and the ONNX Runtime package follows the platform (onnxruntime-gpu only where NVIDIA ships it)."""
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(meta_name))
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist")]

    def installed_with(extras: tuple[str, ...], platform: str, machine: str) -> set[str]:
        names = set()
        for extra in ("", *extras):
            env = {"extra": extra, "sys_platform": platform, "platform_machine": machine}
            names |= {r.name.lower() for r in requirements if r.marker is None or r.marker.evaluate(env)}
        return names

    serving = installed_with((), "linux", "x86_64")
    assert {"onnxruntime-gpu", "onnx", "numpy", "click", "matplotlib", "markdown-it-py", "jsonschema"} <= serving
    assert "onnxruntime" not in serving and not serving & set(TRAINING_STACK)
    assert set(TRAINING_STACK) <= installed_with(("train",), "linux", "x86_64")
    for platform, machine in (("linux", "aarch64"), ("darwin", "arm64"), ("darwin", "x86_64")):
        light = installed_with((), platform, machine)
        assert "onnxruntime" in light and "onnxruntime-gpu" not in light, (platform, machine)
    assert "onnxruntime-gpu" in installed_with((), "win32", "AMD64")


def test_the_installed_wheel_runs_outside_the_tree(installed, tmp_path):
    result = run_installed(installed, tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: rnnforge" in result.stdout and "bench" in result.stdout


def test_training_without_the_training_stack_is_one_line(installed, tmp_path):
    result = run_installed(installed, tmp_path, "train", "sketch", "--run-dir", tmp_path / "run")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 6 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and 'pip install "rnnforge[train]"' in errors[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_installed_wheel_benches_a_copied_run_without_the_training_stack(installed, exported_run, tmp_path):
    run = shutil.copytree(exported_run, tmp_path / "copied_run")
    result = run_installed(
        installed, tmp_path, "bench", run, "--batch-sizes", "1", "--runs", "10", "--warmup", "1", "--max-seconds", "0.2"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bench = json.loads((run / "bench" / "bench.json").read_text())
    assert bench["accuracy"]["onnxruntime"]["accuracy"] > 0
