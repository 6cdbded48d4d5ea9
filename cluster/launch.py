"""Launch a training run on Ray: start (or join) a cluster, run the trainer, hand over the result.

``train(config, run_dir)`` starts a local Ray (or joins the cluster at ``address``), runs
``cluster.worker.train_loop_per_worker`` on ``config.workers`` workers through
Ray Train's ``DataParallelTrainer`` with ``cluster.tf_backend``'s ``TF_CONFIG`` (an elastic group of ``config.min_workers`` to ``config.workers`` with
``--min-workers``/``--workers MIN-MAX``), and gives the final checkpoint to
``cluster.finish.finish_run``, which writes the run dir. Usually called as ``rnnforge train
sketch``; the options come checked from ``rnnforge.models.resolve.resolve_config``, and the run
dir from ``cluster.storage.prepare_run_dir``.

Environment variables go where Ray merges them without conflict: what every process of the job
needs (``rnnforge.core.env.WORKER_ENV``, the setup hook) through the driver's ``ray.init``, the
workers' thread counts through ``RunConfig(worker_runtime_env=...)``; inside ``ray job submit
--runtime-env-json`` the job's own variables win and rnnforge leaves them out (a key in both
would make Ray refuse the driver's runtime env, ray-project/ray#39208).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from rnnforge.cluster.devices import clear_device_records, device_records_path, device_refusal, read_device_records
from rnnforge.cluster.finish import finish_run
from rnnforge.cluster.progress import training_progress
from rnnforge.cluster.storage import check_shared_storage, check_storage, storage_location
from rnnforge.core import fileio
from rnnforge.core.config import TrainConfig
from rnnforge.core.console import VERBOSE_ENV, ray_init_options, verbose, worker_setup_hook
from rnnforge.core.env import WORKER_ENV
from rnnforge.core.errors import Interrupted, TrainingFailed, UserError, on_ctrl_c
from rnnforge.core.machine import local_cpus, local_gpus
from rnnforge.core.run_dir import RunDir
from rnnforge.core.tracking import check_tracking, close_run, fail_run, open_run
from rnnforge.models.spec import TaskData

#: The environment of rnnforge's own local Ray instance, set in the driver before Ray is imported
#: (its daemons and workers inherit it). The first makes Ray take 127.0.0.1 as the node address,
#: so GCS, raylet and the agents listen on loopback only (Ray's own switch for machines without
#: clusters). The second leaves out Ray Train's preemption watcher, an actor process per worker
#: group that polls for nodes being drained: the one node of a local instance is the driver's own
#: machine, whose loss ends the run whatever is watching.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def job_runtime_env() -> dict:
    """The runtime env of the Ray job this driver runs in (``ray job submit --runtime-env-json``,
    which Ray hands the driver in ``RAY_JOB_CONFIG_JSON_ENV_VAR``); ``{}`` outside a job."""
    try:
        return json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}


def worker_env(config: TrainConfig) -> dict:
    """Environment variables of the Ray Train workers (``RunConfig(worker_runtime_env=...)``)."""
    threads = str(config.cpus_per_worker)
    # Inter-op threads matter as much as intra-op ones for RNNs: the time loop's small ops run in
    # parallel (docs/scaling.md measures a worker with one inter-op thread).
    return {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
    }


def without_job_keys(runtime_env: dict, job: dict) -> dict:
    """``runtime_env`` less the variables and fields the job's runtime env ``job`` sets already:
    the user's value wins, and Ray's merge meets no conflict."""
    job_vars = job.get("env_vars") or {}
    kept = {key: value for key, value in runtime_env.items() if key == "env_vars" or key not in job}
    kept["env_vars"] = {key: value for key, value in runtime_env.get("env_vars", {}).items() if key not in job_vars}
    return kept


def job_wide_env() -> dict:
    """The runtime env of every process of the job (Ray Train's controller imports TensorFlow
    too): ``WORKER_ENV``, ``--verbose``, and the setup hook that keeps TensorFlow's start-up lines
    out of the console."""
    return {
        "env_vars": {**WORKER_ENV, VERBOSE_ENV: "1" if verbose() else "0"},
        "worker_process_setup_hook": worker_setup_hook(),
    }


def joined_cluster_env(address: str) -> dict:
    """``RAY_ADDRESS`` for every process of a job on the cluster at ``address`` (``auto`` resolved
    as ``ray.init`` resolves it): Ray's own helpers in the job (Ray Train's placement-group
    cleaner, through the state API) otherwise look for a cluster on their machine, and fail with
    "Found multiple active Ray instances" where a machine runs two. ``{}`` for a Ray Client
    address or one that does not resolve here (``ray.init`` then says why)."""
    from ray._private.services import canonicalize_bootstrap_address

    if "://" in address:
        return {}
    try:
        resolved = canonicalize_bootstrap_address(address)
    except Exception:  # ConnectionError, ValueError: ray.init reports the same address in its own words
        return {}
    return {"RAY_ADDRESS": resolved} if resolved else {}


def connect(config: TrainConfig, address: str | None) -> None:
    """Start a local Ray instance on loopback (GCS, raylet, agents and dashboard on 127.0.0.1;
    CPUs as Ray detects them, a container's limit included) or join the cluster at ``address``;
    the console options (Ray's notices, workers' output) come from ``ray_init_options``."""
    import ray

    if address:
        job_env = job_wide_env()
        job_env["env_vars"].update(joined_cluster_env(address))
        runtime_env = without_job_keys(job_env, job_runtime_env())
        ray.init(address=address, runtime_env=runtime_env, **ray_init_options(address))
        return
    runtime_env = without_job_keys(job_wide_env(), job_runtime_env())
    os.environ.update(LOCAL_RAY_ENV)  # in case Ray was imported before train() set it
    ray.init(
        _node_ip_address="127.0.0.1",  # GCS, raylet and agents on loopback (with LOCAL_RAY_ENV)
        dashboard_host="127.0.0.1",
        include_dashboard=True,
        runtime_env=runtime_env,
        **ray_init_options(address),
    )


def check_resources(config: TrainConfig) -> None:
    """Refuse a run the cluster can never schedule, instead of waiting forever."""
    import ray

    total = ray.cluster_resources()
    have = {"CPU": total.get("CPU", 0), "GPU": total.get("GPU", 0)}
    refuse_unschedulable(config, have, dict.fromkeys(have, "the Ray cluster has {have:g}"))


def check_local_resources(config: TrainConfig, address: str | None) -> None:
    """Refuse what a local Ray (the CPUs Ray detects, this machine's GPUs) can never schedule."""
    if address:
        return
    workers, _ = fewest_workers(config)
    have = {"CPU": local_cpus(), "GPU": local_gpus() if workers * config.gpus_per_worker > 0 else 0}
    refuse_unschedulable(
        config,
        have,
        {
            "CPU": "this machine has {have:g} (pass --address to use a cluster)",
            "GPU": "the Ray cluster has {have:g} (a local run: this machine's GPUs; pass --address to use a cluster)",
        },
    )


def refuse_unschedulable(config: TrainConfig, have: dict, says: dict) -> None:
    """Refuse ``config``'s fewest workers when they need more CPUs or GPUs than ``have`` (per
    unit); ``says[unit]`` words what there is, with ``{have}`` in it."""
    workers, flag = fewest_workers(config)
    for unit, per_worker in (("CPU", config.cpus_per_worker), ("GPU", config.gpus_per_worker)):
        if workers * per_worker > have[unit]:
            raise UserError(
                f"{flag} {workers} x --{unit.lower()}s-per-worker {per_worker:g} needs {workers * per_worker:g} "
                f"{unit}s; " + says[unit].format(have=have[unit])
            )


def fewest_workers(config: TrainConfig) -> tuple[int, str]:
    """The fewest workers the run can go on with, and the option that says so."""
    if elastic(config):
        return config.min_workers, "--min-workers"
    return config.workers, "--workers"


def elastic(config: TrainConfig) -> bool:
    """Whether the worker group may shrink and grow (``--min-workers`` below ``--workers``)."""
    return config.min_workers is not None and config.min_workers < config.workers


def preflight(config: TrainConfig, run_dir: Path, address: str | None = None) -> None:
    """The checks that need no data, Ray or TensorFlow, run first so that their one-line error is
    all the user reads: the run dir (and a local ``--storage-path``) can be created and written,
    a local Ray would have the CPUs and GPUs asked for (with ``address`` the cluster decides), and
    the MLflow store answers."""
    fileio.check_writable(run_dir, "--run-dir")
    if config.shared_storage and not config.storage_path:
        raise UserError("--shared-storage says --storage-path is shared by every node; give --storage-path")
    storage = config.storage_path or ""
    if storage and ("://" not in storage or storage.startswith("file://")):
        fileio.check_writable(storage.removeprefix("file://"), "--storage-path")
    check_local_resources(config, address)
    check_tracking(config)


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
    check_local_resources(config, address)
    run = RunDir(Path(run_dir).resolve())
    started, began = time.perf_counter(), time.time()
    with on_ctrl_c(not_started(run.path)):
        data = check_data(config) if data is None else data
        if not address:
            os.environ.update(LOCAL_RAY_ENV)  # read when Ray is imported
        import ray  # after the data checks: importing Ray Train's TensorFlow support takes seconds

    timing = {"started_at": began, "load_data_s": time.perf_counter() - started}
    tracking = None
    try:
        connect(config, address)
        timing["ray_start_s"] = time.perf_counter() - started - timing["load_data_s"]
        check_resources(config)
        storage, name = storage_location(config.storage_path, run)
        nodes = [node for node in ray.nodes() if node["Alive"]]
        check_storage(storage, len(nodes), config.shared_storage)
        if config.shared_storage:
            check_shared_storage(storage, nodes)
        run.path.mkdir(parents=True, exist_ok=True)
        tracking = open_run(config, run.path)
        devices = device_records_path(storage, name)
        clear_device_records(devices)
        with training_progress(config, progress_every) as progress:  # one line per epoch, printed here
            trainer = make_trainer(config, run, storage, name, callbacks=[progress], tracking=tracking)
            result = fit_interruptibly(trainer)
        records = read_device_records(devices, (result.metrics or {}).get("world_size", config.workers))
        for record in records:
            if record["cpu_fallback"]:
                print(
                    f"rank {record['rank']}: Ray assigned GPU {', '.join(record['assigned_gpus'])} but TensorFlow "
                    "sees none; it trained on the CPU (--allow-cpu-fallback)",
                    flush=True,
                )
    except KeyboardInterrupt:
        ray.shutdown()  # stops the local Ray (or leaves the cluster, whose actors of this run end with the driver)
        raise Interrupted(
            f"interrupted: the run in {run.path} stopped; run the same 'rnnforge train' command with "
            f"--run-dir {run.path} to resume it from its last checkpoint (it starts afresh if none was saved yet)"
        ) from None
    except Exception as exc:
        if not any(cls.__name__ == "TrainingFailedError" for cls in type(exc).__mro__):
            raise  # Ray Train's (v2: WorkerGroupError, ControllerError; both raised by fit itself)
        refusal = device_refusal(exc)  # a GPU its TensorFlow cannot use: bad input, exit 2
        fail_run(tracking)
        raise (UserError(refusal) if refusal else TrainingFailed(f"training failed: {failure_line(exc)}")) from None
    finally:
        if not address and ray.is_initialized():
            ray.shutdown()
    refusal = next((record["refusal"] for record in records if record.get("refusal")), None)
    if refusal:  # the workers ended without training (cluster.devices.group_refusal): bad input, exit 2
        fail_run(tracking)
        raise UserError(refusal)
    if result.error:
        fail_run(tracking)
        raise TrainingFailed(f"training failed: {failure_line(result.error)}")
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    seconds = time.perf_counter() - started
    return finish_interruptibly(config, run, result.checkpoint, seconds, timing, data, records, tracking=tracking)


def finish_interruptibly(config: TrainConfig, run: RunDir, checkpoint, seconds: float, *finish_args, tracking=None):
    """``finish_run`` (model, scores, plots, config.json last) then ``close_run``; Ctrl-C on the
    way is one line saying what is kept: training is over and its final checkpoint stays in Ray
    Train's storage, so the same command writes the run dir from it without training again
    (``cluster.worker``: a finished state trains no more epochs)."""
    resume = f"run the same 'rnnforge train' command with --run-dir {run.path} to write the run dir from it"
    with on_ctrl_c(
        f"interrupted while writing the run dir {run.path}: training is over and its final checkpoint is kept; "
        f"{resume} (no epoch is trained again)"
    ):
        metrics = finish_run(config, run, checkpoint, seconds, *finish_args)
    with on_ctrl_c(
        f"interrupted while logging to MLflow: the run dir {run.path} is written and complete; its MLflow run "
        "stays unfinished (rnnforge export onnx still logs the ONNX files into it)"
    ):
        close_run(tracking, run.path, metrics)
    return metrics


def not_started(run_dir: Path) -> str:
    """The line of a Ctrl-C before Ray Train started: nothing to resume."""
    return f"interrupted before training started: no training ran for {run_dir}; run the same command again"


def fit_interruptibly(trainer):
    """``trainer.fit()`` in a helper thread, so that Ctrl-C reaches this (main) thread as
    ``KeyboardInterrupt``: Ray Train registers its own SIGINT handler only when ``fit`` runs on the
    main thread, and that handler ends the process with exit 1 and no message."""
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # handed to the main thread as is
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="rnnforge-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def failure_line(error: BaseException) -> str:
    """One line for a Ray Train failure: each failed worker's rank and the last line of its error
    (``ValueError: ...``), not Ray's tracebacks."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        return "; ".join(f"worker {rank}: {_last_line(exc)}" for rank, exc in sorted(failures.items()))
    return _last_line(error)


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


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


def make_trainer(
    config: TrainConfig,
    run: RunDir,
    storage: str,
    name: str,
    callbacks: list | None = None,
    tracking: dict | None = None,
):
    """The Ray Train trainer of ``config`` (``TF_CONFIG`` from ``cluster.tf_backend``): its workers get the config as plain data
    (``TrainConfig.to_dict``) and, beside it, where rank 0 writes TensorBoard scalars and where
    every worker records its devices (``cluster.devices``); ``callbacks``: Ray Train
    ``UserCallback``s (``cluster.progress``); ``tracking``: the MLflow run rank 0 logs each epoch
    into (``core.tracking``). An elastic config gets ``num_workers=(min, max)``: Ray Train
    starts as many as the cluster has room for and, after a failure or when room appears, restarts
    the group at its new size from the last checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from rnnforge.cluster.tf_backend import MultiWorkerConfig
    from rnnforge.cluster.worker import train_loop_per_worker

    use_gpu = config.gpus_per_worker > 0
    resources = {"CPU": config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = config.gpus_per_worker
    return DataParallelTrainer(
        train_loop_per_worker,
        backend_config=MultiWorkerConfig(),
        train_loop_config={
            "config": config.to_dict(),
            "tensorboard_dir": str(run.tensorboard),
            "devices": device_records_path(storage, name),
            "tracking": tracking,
        },
        scaling_config=ScalingConfig(
            num_workers=(config.min_workers, config.workers) if elastic(config) else config.workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=config.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or [],
            worker_runtime_env=without_job_keys({"env_vars": worker_env(config)}, job_runtime_env()),
        ),
    )
