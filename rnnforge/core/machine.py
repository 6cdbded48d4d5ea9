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


def local_cpus() -> int:
    """CPUs a local Ray gives this machine, as Ray counts them (``ray._private.utils.get_num_cpus``)
    without importing Ray: a container's cgroup quota (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) where one is set, else every core; at least 1."""
    count = os.cpu_count() or 1
    if os.environ.get("RAY_USE_MULTIPROCESSING_CPU_COUNT"):
        return count
    quota = None
    with contextlib.suppress(OSError, ValueError):
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    if quota is None:
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            quota = limit / period if limit > 0 else None
    return max(1, int(min(quota, count))) if quota else count


def local_gpus() -> int:
    """NVIDIA GPUs this machine gives a local Ray, counted without importing Ray or TensorFlow:
    ``CUDA_VISIBLE_DEVICES`` where set, else the driver's ``/proc/driver/nvidia/gpus`` entries,
    else ``nvidia-smi -L``'s lines; 0 without a driver."""
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    with contextlib.suppress(OSError):
        return len(list(Path("/proc/driver/nvidia/gpus").iterdir()))
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            return sum(line.startswith("GPU ") for line in listed.splitlines())
    return 0


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), None where unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


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


#: ``nvidia-smi --query-gpu`` fields of ``gpu_state``: what a reader needs to trust a GPU figure
#: (clocks against their maximum, temperature and power limit: throttling shows in them).
GPU_FIELDS = (
    "index",
    "name",
    "driver_version",
    "pstate",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "temperature.gpu",
    "power.draw",
    "power.limit",
)


def gpu_state(nvidia_smi: str = "nvidia-smi") -> dict:
    """Each GPU's ``GPU_FIELDS`` as ``nvidia-smi`` reports them now (``[N/A]`` as None, numbers
    as numbers, units as in the field names: MHz, degrees C, W), or ``{"available": False, "why"}``
    where there is no ``nvidia-smi`` or it does not answer."""
    import shutil
    import subprocess

    if shutil.which(nvidia_smi) is None:
        return {"available": False, "why": "no nvidia-smi on the PATH"}
    try:
        done = subprocess.run(
            [nvidia_smi, f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"available": False, "why": f"nvidia-smi failed: {exc}"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        why = next((line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()), "no output")
        return {"available": False, "why": f"nvidia-smi exit {done.returncode}: {why}"}
    gpus = []
    for line in lines:
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(GPU_FIELDS):
            return {"available": False, "why": f"nvidia-smi gave {len(cells)} fields, not {len(GPU_FIELDS)}: {line!r}"}
        gpus.append({field: _number(cell) for field, cell in zip(GPU_FIELDS, cells, strict=True)})
    return {"available": True, "gpus": gpus}


def _number(cell: str):
    if cell.startswith("[") or cell in ("", "N/A"):  # [N/A], [Not Supported]
        return None
    with contextlib.suppress(ValueError):
        return int(cell)
    with contextlib.suppress(ValueError):
        return float(cell)
    return cell


def cuda_driver_version(nvidia_smi: str = "nvidia-smi") -> str | None:
    """The CUDA version the driver supports (``CUDA Version: 12.4`` in nvidia-smi's header)."""
    import re
    import shutil
    import subprocess

    if shutil.which(nvidia_smi) is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=15).stdout
        found = re.search(r"CUDA Version:\s*([\d.]+)", out)
        return found.group(1) if found else None
    return None


def cpu_governor() -> str | None:
    """cpu0's frequency governor (``performance``, ``powersave``, ...), None where not exposed."""
    with contextlib.suppress(OSError):
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip() or None
    return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine was besides the measurement."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None
