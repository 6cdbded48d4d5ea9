"""What produced a figure: the machine and the versions of the stack."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def versions() -> dict:
    """Versions of the stack that produced an artifact."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("tensorflow", "tf-keras", "ray", "tf2onnx", "onnx", "onnxruntime-gpu", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[package] = metadata.version(package)
    return out


def machine_info() -> dict:
    """CPU model and cores, and the GPU when ``nvidia-smi`` answers."""
    import shutil
    import subprocess

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "platform": platform.platform(), "gpu": None}
    if shutil.which("nvidia-smi"):
        try:
            out = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                .stdout.strip()
                .splitlines()
            )
            if out:
                name, driver = (s.strip() for s in out[0].split(",", 1))
                info["gpu"] = {"name": name, "driver": driver}
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return info
