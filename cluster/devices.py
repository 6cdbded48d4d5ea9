"""What each Ray worker trains on: the GPUs Ray assigned it, the devices TensorFlow sees, the
distribution strategy and its all-reduce.

A worker that Ray gave a GPU but whose TensorFlow sees none (a CPU-only TensorFlow build, no
NVIDIA driver, ``CUDA_VISIBLE_DEVICES`` overridden) would otherwise train on the CPU for hours
without a word: ``check_devices`` and ``group_refusal`` stop the run (every worker, no
traceback) with one line naming the rank and node, unless ``--allow-cpu-fallback``. Every worker writes its record to the run's Ray Train storage, which
every node sees (``STORAGE/NAME/devices/rank_N.json``); the driver reads them back after
training (``read_device_records``) for metrics.json and the report.

Multi-worker all-reduce uses NCCL when the workers hold GPUs and ring otherwise. Fractional GPUs
(``--gpus-per-worker 0.5``) put two workers on one device; memory growth is on, so both fit.
"""

from __future__ import annotations

import json
import os
import socket

DEVICES_DIR = "devices"
#: The thread settings each worker records as it found them (the runtime env's, or the job's own).
THREAD_ENV = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
#: Marks a device refusal inside Ray's error text, so the driver can tell it from other failures.
DEVICE_ERROR_MARK = "rnnforge-device-error: "


class DeviceError(RuntimeError):
    """A worker was assigned GPUs that its TensorFlow cannot use (and no ``--allow-cpu-fallback``)."""

    def __init__(self, message: str):
        # Ray re-creates the exception on the driver from its args: mark them once only.
        super().__init__(message if message.startswith(DEVICE_ERROR_MARK) else DEVICE_ERROR_MARK + message)


def describe_worker(rank: int, mixed_precision: bool) -> dict:
    """This worker's node (id, IP, host name), its thread settings, the GPU ids Ray assigned
    (``ray.get_gpu_ids()``), ``CUDA_VISIBLE_DEVICES`` and the GPUs TensorFlow sees."""
    import ray
    import tensorflow as tf

    return {
        "rank": rank,
        "node": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
        "threads": {key: os.environ.get(key) for key in THREAD_ENV},
        "assigned_gpus": [str(gpu) for gpu in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "tensorflow_gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "mixed_precision": bool(mixed_precision),
    }


def check_devices(record: dict, allow_cpu_fallback: bool) -> dict:
    """``record`` with ``cpu_fallback`` and ``refusal``: the one line why this worker cannot train
    (GPUs assigned, none seen by TensorFlow, no fallback allowed), else ``None``."""
    stranded = bool(record["assigned_gpus"]) and not record["tensorflow_gpus"]
    refusal = None
    if stranded and not allow_cpu_fallback:
        refusal = (
            f"rank {record['rank']} on node {record['host']} ({record['node'][:12]}) was assigned GPU "
            f"{', '.join(record['assigned_gpus'])} by Ray, but TensorFlow sees no GPU there (a CPU-only "
            "TensorFlow build, no NVIDIA driver, or CUDA_VISIBLE_DEVICES overridden); fix that, or pass "
            "--allow-cpu-fallback to train on the CPU anyway"
        )
    return {**record, "cpu_fallback": stranded, "refusal": refusal}


def group_refusal(folder: str | None, record: dict, world_size: int) -> str | None:
    """Whether the group may train, agreed by every worker: each writes its ``record`` to
    ``folder``, all wait for one another (``ray.train.collective.barrier``), then each reads every
    record and gets the first refusal, or ``None``. Every worker of a refused group then ends
    without an exception, and the driver reports the refusal from the records: an expected refusal
    is one line, not worker tracebacks that Ray forwards from a joined cluster. Without a
    ``folder`` (a worker run outside ``cluster.launch``) a refusal is raised as ``DeviceError``."""
    if not folder:
        if record["refusal"]:
            raise DeviceError(record["refusal"])
        return None
    import ray.train.collective

    write_device_record(folder, record)
    ray.train.collective.barrier()
    return next((r["refusal"] for r in read_device_records(folder, world_size) if r.get("refusal")), None)


def make_strategy(world_size: int, record: dict):
    """The strategy for ``world_size`` workers, and ``record`` with its name and all-reduce.

    One worker has nothing to all-reduce: the default strategy spares MultiWorkerMirroredStrategy's
    per-step collectives (about 20% of a small model's step time on CPU, benchmarks/scaling.py).
    """
    import tensorflow as tf

    if world_size == 1:
        return tf.distribute.get_strategy(), {**record, "strategy": "default (one worker)", "all_reduce": "none"}
    implementation = "NCCL" if record["tensorflow_gpus"] else "RING"
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=getattr(tf.distribute.experimental.CommunicationImplementation, implementation)
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return strategy, {**record, "strategy": "MultiWorkerMirroredStrategy", "all_reduce": implementation.lower()}


def device_records_path(storage: str, name: str) -> str:
    """Where the workers of the run stored at ``storage``/``name`` write their records."""
    return f"{storage.rstrip('/')}/{name}/{DEVICES_DIR}"


def write_device_record(folder: str, record: dict) -> None:
    """``folder``/rank_N.json on the storage's filesystem (a local path or a pyarrow URI)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(folder)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/rank_{record['rank']}.json") as out:
        out.write(json.dumps(record).encode())


def read_device_records(folder: str, world_size: int) -> list[dict]:
    """The records of ranks 0..world_size-1 that ``folder`` holds, by rank."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(folder)
    records = []
    for rank in range(world_size):
        info = fs.get_file_info(f"{path}/rank_{rank}.json")
        if info.type == pyarrow.fs.FileType.File:
            with fs.open_input_stream(info.path) as stream:
                records.append(json.loads(stream.read()))
    return records


def clear_device_records(folder: str) -> None:
    """Remove an earlier attempt's records (a resized or resumed run writes them anew)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(folder)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(path)


def device_refusal(error: BaseException) -> str | None:
    """The one-line ``DeviceError`` message inside a failed run's error, if that is what failed."""
    failures = getattr(error, "worker_failures", None) or {}
    for text in [str(e) for e in failures.values()] + [str(error)]:
        if DEVICE_ERROR_MARK in text:
            return text.rsplit(DEVICE_ERROR_MARK, 1)[1].splitlines()[0]
    return None
