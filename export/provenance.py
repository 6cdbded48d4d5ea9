"""Where a bench figure comes from, beyond the machine line: the ONNX Runtime that was imported
(version and file: two ORT packages can sit side by side), its CUDA and cuDNN, the driver, the CPU's
governor, and the GPUs' clocks, temperature and power limit and the load average before and after
the timing. ``bench.json``'s ``provenance``; the report prints it as one block.

    before = snapshot()
    ...  # time the engines
    record = provenance(before, snapshot())
"""

from __future__ import annotations

import contextlib

from rnnforge.core.machine import cpu_governor, cuda_driver_version, gpu_state, load_average, machine_info

#: pip packages that carry CUDA and cuDNN for onnxruntime-gpu (``onnxruntime.preload_dlls``).
CUDA_PACKAGES = (
    "nvidia-cuda-runtime-cu12",
    "nvidia-cuda-runtime",
    "nvidia-cudnn-cu12",
    "nvidia-cudnn-cu13",
    "nvidia-cublas-cu12",
    "nvidia-cublas",
)


def snapshot() -> dict:
    """The state that changes during a bench: the load average and each GPU's clocks, temperature
    and power (``core.machine.gpu_state``; not available without ``nvidia-smi``)."""
    return {"load_average": load_average(), "gpu": gpu_state()}


def onnxruntime_info() -> dict:
    """The imported ``onnxruntime``: version, the file it came from, the package it was installed
    as and the CUDA/cuDNN its build targets (GPU builds say so in ``build_and_package_info``)."""
    import onnxruntime as ort

    info = {"version": ort.__version__, "file": ort.__file__}
    with contextlib.suppress(ImportError):
        from onnxruntime.capi import build_and_package_info as build

        info.update(
            {k: getattr(build, k) for k in ("package_name", "cuda_version", "cudnn_version") if hasattr(build, k)}
        )
    return info


def cuda_libraries() -> dict:
    """Versions of the CUDA and cuDNN pip packages installed here (those onnxruntime-gpu preloads)."""
    from importlib import metadata

    found = {}
    for package in CUDA_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def provenance(before: dict, after: dict) -> dict:
    """bench.json's ``provenance``: ORT, CUDA, CPU and the machine's state ``before``/``after``
    (``snapshot``) the timing. Threads and provider options as applied are per variant, in
    ``sessions``."""
    gpu = before["gpu"]
    return {
        "onnxruntime": onnxruntime_info(),
        "cuda": {
            "driver": gpu["gpus"][0]["driver_version"] if gpu.get("available") else None,
            "driver_cuda_version": cuda_driver_version() if gpu.get("available") else None,
            "libraries": cuda_libraries(),
        },
        "cpu": {"model": machine_info()["cpu"], "governor": cpu_governor()},
        "before": before,
        "after": after,
    }
