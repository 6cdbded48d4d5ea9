"""Launch a training run on Ray: start (or join) a cluster, run the trainer, hand over the result.

``train(config, run_dir)`` starts a local Ray (or joins the cluster at ``address``), runs
``cluster.worker.train_loop_per_worker`` on ``config.workers`` workers through
``TensorflowTrainer``, and gives the final checkpoint to ``cluster.finish.finish_run``, which
writes the run dir. Usually called as ``rnnforge train sketch``; the options come checked from
``rnnforge.models.resolve.resolve_config``, and the run dir from
``cluster.storage.prepare_run_dir``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rnnforge.cluster.finish import finish_run
from rnnforge.cluster.progress import ray_init_options, training_progress, worker_setup_hook
from rnnforge.cluster.storage import storage_location
from rnnforge.core.config import TrainConfig
from rnnforge.core.console import VERBOSE_ENV, verbose
from rnnforge.core.env import WORKER_ENV
from rnnforge.core.errors import UserError
from rnnforge.core.run_dir import RunDir
from rnnforge.models.spec import TaskData

#: Filesystem types that several machines can mount (``/proc/mounts``); ``fuse.*`` counts too.
SHARED_FILESYSTEMS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "lustre",
    "gpfs",
    "beegfs",
    "ceph",
    "glusterfs",
    "wekafs",
    "panfs",
    "gfs2",
    "ocfs2",
    "orangefs",
}


def worker_env(config: TrainConfig) -> dict:
    """Environment variables every Ray worker gets through the runtime env."""
    threads = str(config.cpus_per_worker)
    # Inter-op threads matter as much as intra-op ones for RNNs (the time loop's small ops run in
    # parallel): a 2-CPU worker with 1 inter-op thread trained the sketch model 1.45x slower.
    return {
        **WORKER_ENV,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
        VERBOSE_ENV: "1" if verbose() else "0",
    }


def connect(config: TrainConfig, address: str | None) -> None:
    """Start a local Ray instance (dashboard on 127.0.0.1) or join the cluster at ``address``;
    the console options (Ray's notices, workers' output) come from ``ray_init_options``."""
    import ray

    runtime_env = {"env_vars": worker_env(config), "worker_process_setup_hook": worker_setup_hook()}
    if address:
        ray.init(address=address, runtime_env=runtime_env, **ray_init_options(address))
        return
    ray.init(
        num_cpus=os.cpu_count() or 1,
        dashboard_host="127.0.0.1",
        include_dashboard=True,
        runtime_env=runtime_env,
        **ray_init_options(address),
    )


def check_resources(config: TrainConfig) -> None:
    """Refuse a run the cluster can never schedule, instead of waiting forever."""
    import ray

    total = ray.cluster_resources()
    need_cpu = config.workers * config.cpus_per_worker
    need_gpu = config.workers * config.gpus_per_worker
    if need_cpu > total.get("CPU", 0):
        raise UserError(
            f"--workers {config.workers} x --cpus-per-worker {config.cpus_per_worker} needs "
            f"{need_cpu} CPUs; the Ray cluster has {total.get('CPU', 0):g}"
        )
    if need_gpu > total.get("GPU", 0):
        raise UserError(
            f"--workers {config.workers} x --gpus-per-worker {config.gpus_per_worker:g} needs "
            f"{need_gpu:g} GPUs; the Ray cluster has {total.get('GPU', 0):g}"
        )


def check_storage(storage: str, nodes: int) -> None:
    """Refuse node-local storage on a multi-node cluster: every worker writes checkpoints there
    and the driver reads them back, so every node must see the same files."""
    if nodes < 2 or ("://" in storage and not storage.startswith("file://")):
        return
    fstype = filesystem_type(Path(storage.removeprefix("file://")))
    if fstype in SHARED_FILESYSTEMS or fstype.startswith("fuse."):
        return
    raise UserError(
        f"Ray Train storage {storage} is on this node's own disk ({fstype}) but the Ray cluster has "
        f"{nodes} nodes: workers on other nodes could not write checkpoints there; pass --storage-path "
        "with a shared filesystem mounted at the same path on every node, or an s3:// or gs:// URI"
    )


def filesystem_type(path: Path) -> str:
    """The type (``ext4``, ``nfs4``, ...) of the filesystem holding ``path``, from /proc/mounts."""
    path = path.resolve()
    best, fstype = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if len(mount) >= len(best) and (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")):
            best, fstype = mount, fields[2]
    return fstype


def train(
    config: TrainConfig,
    run_dir: Path,
    address: str | None = None,
    data: TaskData | None = None,
    progress_every: int = 1,
) -> dict:
    """Run distributed training for ``config`` and write the run dir; returns metrics.json's content.
    ``data``: what ``check_data(config)`` returned, when the caller checked the data already;
    ``progress_every``: a console line every that many epochs (and the first and last)."""
    need_cpu = config.workers * config.cpus_per_worker
    if not address and need_cpu > (os.cpu_count() or 1):  # the local Ray gets one CPU per core
        raise UserError(
            f"--workers {config.workers} x --cpus-per-worker {config.cpus_per_worker} needs "
            f"{need_cpu} CPUs; this machine has {os.cpu_count() or 1} (pass --address to use a cluster)"
        )
    run = RunDir(Path(run_dir).resolve())
    started, began = time.perf_counter(), time.time()
    data = check_data(config) if data is None else data
    import ray  # after the data checks: importing Ray Train's TensorFlow support takes seconds

    timing = {"started_at": began, "load_data_s": time.perf_counter() - started}
    connect(config, address)
    timing["ray_start_s"] = time.perf_counter() - started - timing["load_data_s"]
    try:
        check_resources(config)
        storage, name = storage_location(config.storage_path, run)
        check_storage(storage, sum(1 for node in ray.nodes() if node["Alive"]))
        run.path.mkdir(parents=True, exist_ok=True)
        with training_progress(config, progress_every) as progress:  # one line per epoch, printed here
            result = make_trainer(config, run, storage, name, callbacks=[progress]).fit()
    finally:
        if not address:
            ray.shutdown()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    return finish_run(config, run, result.checkpoint, time.perf_counter() - started, timing, data)


def check_data(config: TrainConfig) -> TaskData:
    """Load the data once in the driver, so bad input fails with one line before any Ray worker
    starts, and refuse splits too small to give every worker its own shard; returns the data
    (the driver scores the final model on it)."""
    from rnnforge.models import get_spec

    data = get_spec(config.task).load_data(config)
    print(
        f"{config.task}: dataset {config.dataset}, "
        + ", ".join(f"{s} {data.num_examples(s)}" for s in data.splits)
        + " examples",
        flush=True,
    )
    for split in ("train", "valid"):  # an empty shard would leave a worker waiting forever
        if data.num_examples(split) < config.workers:
            raise UserError(
                f"the {split} split has {data.num_examples(split)} example(s), fewer than --workers "
                f"{config.workers}: every worker needs its own shard; add data or use fewer workers"
            )
    return data


def make_trainer(config: TrainConfig, run: RunDir, storage: str, name: str, callbacks: list | None = None):
    """The ``TensorflowTrainer`` of ``config``: its workers get the config as plain data
    (``TrainConfig.to_dict``) and, beside it, where rank 0 writes TensorBoard scalars;
    ``callbacks``: Ray Train ``UserCallback``s (``cluster.progress``)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from rnnforge.cluster.worker import train_loop_per_worker

    use_gpu = config.gpus_per_worker > 0
    resources = {"CPU": config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = config.gpus_per_worker
    return TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "tensorboard_dir": str(run.tensorboard)},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=config.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or [],
        ),
    )
