"""Launch a training run on Ray and turn its result into a run dir.

``train(config, run_dir)`` starts (or joins, with ``address``) a Ray cluster, runs
``cluster.worker.train_loop_per_worker`` on ``config["workers"]`` workers through
``TensorflowTrainer``, then writes ``model.keras``, ``config.json``, ``metrics.json``, the
architecture and the plots into ``run_dir``. Usually called as ``rnnforge train sketch``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from rnnforge.core import fileio, plots
from rnnforge.core.env import WORKER_ENV
from rnnforge.core.errors import UserError
from rnnforge.core.machine import versions
from rnnforge.core.run_dir import RunDir

#: Options every task shares, with their defaults (a task's spec may override them).
COMMON_DEFAULTS = {
    "dataset": None,  # the task's first dataset
    "data_dir": None,  # where a real dataset's files are (None: download, or embedded data)
    "workers": 2,
    "cpus_per_worker": 1,
    "gpus_per_worker": 0,
    "epochs": 20,
    "batch_size": 64,
    "learning_rate": 2e-3,
    "lr_schedule": "cosine",
    "clipnorm": 1.0,
    "dropout": 0.0,
    "rnn": "lstm",
    "patience": 5,
    "seed": 42,
    "data_seed": 0,
    "max_failures": 0,
    "storage_path": None,  # Ray Train storage (None: RUN_DIR/checkpoints)
    "mixed_precision": False,
    "checkpoint_every": 1,  # epochs between checkpoints (the last epoch always gets one)
}


#: ``--storage-path`` URI schemes (pyarrow filesystems, as Ray Train uses them).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")
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


def resolve_config(task: str, options: dict) -> dict:
    """Merge common defaults, the task's defaults and the user's options (``None`` = not given)."""
    from rnnforge.models import get_spec

    spec = get_spec(task)
    config = {**COMMON_DEFAULTS, **spec.defaults}
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(k for k in given if k not in config)
    if foreign:
        raise UserError(f"--{foreign[0].replace('_', '-')} does not apply to task {task!r}")
    config.update(given)
    for key in ("data_dir", "tfds_dir"):  # workers may run in another directory
        if config.get(key):
            config[key] = str(Path(config[key]).expanduser().resolve())
    config["task"] = task
    config["dataset"] = config["dataset"] or spec.default_dataset
    if config["dataset"] not in spec.datasets:
        raise UserError(
            f"unknown dataset {config['dataset']!r} for task {task!r} (--dataset): "
            f"expected one of {', '.join(spec.datasets)}"
        )
    for key in (
        "workers",
        "cpus_per_worker",
        "epochs",
        "batch_size",
        "units",
        "max_len",
        "max_per_class",
        "checkpoint_every",
        "frames",
        "frame_size",
        "length_buckets",
    ):
        if config.get(key) is not None and config[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    if not 0.0 <= config["dropout"] < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {config['dropout']}")
    if not config["learning_rate"] > 0:
        raise UserError(f"--learning-rate must be positive, got {config['learning_rate']}")
    for key in ("gpus_per_worker", "clipnorm", "patience"):
        if not config[key] >= 0:
            raise UserError(f"--{key.replace('_', '-')} must be at least 0, got {config[key]}")
    if config["max_failures"] < 0:
        raise UserError(f"--max-failures must be at least 0, got {config['max_failures']}")
    if config["mixed_precision"] and not config["gpus_per_worker"]:
        raise UserError(
            "--mixed-precision needs GPU workers (--gpus-per-worker > 0): "
            "on CPUs float16 is slower than float32, not faster"
        )
    config["storage_path"] = _normalise_storage(config["storage_path"])
    return config


def _normalise_storage(storage: str | None) -> str | None:
    """``--storage-path``: an absolute local path, or a URI of a filesystem pyarrow reads."""
    if not storage:
        return None
    scheme = storage.split("://", 1)[0].lower() if "://" in storage else None
    if scheme is None:
        return str(Path(storage).expanduser().resolve())
    if scheme not in STORAGE_SCHEMES:
        raise UserError(
            f"--storage-path {storage}: unsupported scheme {scheme}://, expected a directory or one of "
            + ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
        )
    from urllib.parse import urlsplit

    if urlsplit(storage).password or "access_key=" in storage or "secret_key=" in storage:
        # config.json, logs and reports would carry it: credentials come from the environment instead
        raise UserError(
            f"--storage-path {scheme}://...: the URI holds credentials; give them to the cluster through "
            "the cloud SDK's environment or credentials file (e.g. AWS_ACCESS_KEY_ID, "
            "GOOGLE_APPLICATION_CREDENTIALS), never in the path"
        )
    return storage


def storage_location(config: dict, run: RunDir) -> tuple[str, str]:
    """Ray Train's ``(storage_path, name)`` for a run: RUN_DIR/checkpoints/train by default,
    STORAGE/<run dir's name> with ``--storage-path``."""
    if config.get("storage_path"):
        return config["storage_path"], run.path.name
    return str(run.checkpoints), "train"


def _storage_fs(uri: str):
    """The pyarrow filesystem of ``uri`` (a URI or an absolute path) and the path inside it."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:
        raise UserError(f"--storage-path {uri}: {exc}".splitlines()[0]) from None


def prepare_run_dir(path: Path, overwrite: bool, storage_path: str | None = None) -> Path:
    """Check ``--run-dir`` before any work: refuse to clobber a finished run unless ``overwrite``.

    A run without config.json whose Ray Train storage holds checkpoints is an interrupted run:
    Ray Train resumes it from its last checkpoint. ``overwrite`` also clears ``storage_path``'s
    copy of the run.
    """
    run = RunDir(Path(path).resolve())
    fs, stored_run = _storage_fs("/".join(storage_location({"storage_path": storage_path}, run)))
    interrupted = fs.get_file_info(stored_run).type.name == "Directory"
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--run-dir {run.path} is a file, expected a directory")
    if run.config.exists():
        if not overwrite:
            raise UserError(
                f"--run-dir {run.path} already holds a finished run; "
                "pass --overwrite to replace it or choose another --run-dir"
            )
        for artifact in run.artifacts():
            if artifact.is_dir():
                shutil.rmtree(artifact)
            elif artifact.exists():
                artifact.unlink()
        if storage_path and interrupted:
            fs.delete_dir(stored_run)
    elif interrupted:
        print(f"resuming the interrupted run in {run.path} from its last checkpoint", flush=True)
    return run.path


def worker_env(config: dict) -> dict:
    """Environment variables every Ray worker gets through the runtime env."""
    threads = str(config["cpus_per_worker"])
    # Inter-op threads matter as much as intra-op ones for RNNs (the time loop's small ops run in
    # parallel): a 2-CPU worker with 1 inter-op thread trained the sketch model 1.45x slower.
    return {
        **WORKER_ENV,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
    }


def connect(config: dict, address: str | None) -> None:
    """Start a local Ray instance (dashboard on 127.0.0.1) or join the cluster at ``address``."""
    import ray

    runtime_env = {"env_vars": worker_env(config)}
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level="WARNING")
        return
    ray.init(
        num_cpus=os.cpu_count() or 1,
        dashboard_host="127.0.0.1",
        include_dashboard=True,
        runtime_env=runtime_env,
        logging_level="WARNING",
    )


def check_resources(config: dict) -> None:
    """Refuse a run the cluster can never schedule, instead of waiting forever."""
    import ray

    total = ray.cluster_resources()
    need_cpu = config["workers"] * config["cpus_per_worker"]
    need_gpu = config["workers"] * config["gpus_per_worker"]
    if need_cpu > total.get("CPU", 0):
        raise UserError(
            f"--workers {config['workers']} x --cpus-per-worker {config['cpus_per_worker']} needs "
            f"{need_cpu} CPUs; the Ray cluster has {total.get('CPU', 0):g}"
        )
    if need_gpu > total.get("GPU", 0):
        raise UserError(
            f"--workers {config['workers']} x --gpus-per-worker {config['gpus_per_worker']:g} needs "
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


def train(config: dict, run_dir: Path, address: str | None = None) -> dict:
    """Run distributed training for ``config`` and write the run dir; returns metrics.json's content."""
    need_cpu = config["workers"] * config["cpus_per_worker"]
    if not address and need_cpu > (os.cpu_count() or 1):  # the local Ray gets one CPU per core
        raise UserError(
            f"--workers {config['workers']} x --cpus-per-worker {config['cpus_per_worker']} needs "
            f"{need_cpu} CPUs; this machine has {os.cpu_count() or 1} (pass --address to use a cluster)"
        )
    from rnnforge.models import get_spec

    run = RunDir(Path(run_dir).resolve())
    started, began = time.perf_counter(), time.time()
    # Load the data once here first: bad input fails with one line before any Ray worker starts.
    data = get_spec(config["task"]).load_data(config)
    print(
        f"{config['task']}: dataset {config['dataset']}, "
        + ", ".join(f"{s} {data.num_examples(s)}" for s in data.splits)
        + " examples",
        flush=True,
    )
    for split in ("train", "valid"):  # an empty shard would leave a worker waiting forever
        if data.num_examples(split) < config["workers"]:
            raise UserError(
                f"the {split} split has {data.num_examples(split)} example(s), fewer than --workers "
                f"{config['workers']}: every worker needs its own shard; add data or use fewer workers"
            )
    import ray  # after the data checks: importing Ray Train's TensorFlow support takes seconds
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from rnnforge.cluster.worker import train_loop_per_worker

    timing = {"started_at": began, "load_data_s": time.perf_counter() - started}
    connect(config, address)
    timing["ray_start_s"] = time.perf_counter() - started - timing["load_data_s"]
    try:
        check_resources(config)
        storage, name = storage_location(config, run)
        check_storage(storage, sum(1 for node in ray.nodes() if node["Alive"]))
        run.path.mkdir(parents=True, exist_ok=True)
        use_gpu = config["gpus_per_worker"] > 0
        resources = {"CPU": config["cpus_per_worker"]}
        if use_gpu:
            resources["GPU"] = config["gpus_per_worker"]
        trainer = TensorflowTrainer(
            train_loop_per_worker,
            train_loop_config={**config, "tensorboard_dir": str(run.tensorboard)},
            scaling_config=ScalingConfig(
                num_workers=config["workers"], use_gpu=use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=name,
                storage_path=storage,
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                failure_config=FailureConfig(max_failures=config["max_failures"]),
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        result = trainer.fit()
    finally:
        if not address:
            ray.shutdown()
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    return finish_run(config, run, result.checkpoint, time.perf_counter() - started, timing, data)


def finish_run(
    config: dict, run: RunDir, checkpoint, train_seconds: float, timing: dict | None = None, data=None
) -> dict:
    """Copy the final model out of ``checkpoint``, score it on the test split, write the run dir.

    ``timing``: the driver's ``started_at`` (wall clock) and seconds per phase, completed here with
    the workers' (start-up until ``fit``, ``fit``, checkpoint saving) for metrics.json. ``data``:
    the driver's ``TaskData`` (loaded again from ``config`` when not given)."""
    from tensorflow import keras

    from rnnforge.cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from rnnforge.models import get_spec

    spec = get_spec(config["task"])
    data = spec.load_data(config) if data is None else data
    with checkpoint.as_directory() as ckpt_dir:
        state = json.loads((Path(ckpt_dir) / CHECKPOINT_STATE).read_text())
        trained = keras.models.load_model(Path(ckpt_dir) / CHECKPOINT_MODEL, compile=False)
    if config.get("mixed_precision"):
        trained = _float32_twin(trained, spec, config, data.info)
    model = spec.to_serving(trained, config, data.info)
    with fileio.atomic_path(run.model, suffix=".keras") as tmp:
        model.save(tmp, save_format="keras_v3")
    scores = {}
    for split in ("valid", "test"):
        x, y = data.splits[split]
        if not len(x):
            scores[split] = {"examples": 0}
            continue
        predictions = model.predict(x, batch_size=256, verbose=0)
        scores[split] = {"examples": int(len(x)), **spec.score(x, y, predictions, data.info)}
        if split == data.evaluation_split():
            spec.report_plots(x, y, predictions, data, split, run.path)

    history = state["history"]
    lines: list[str] = []
    model.summary(print_fn=lines.append, expand_nested=True)
    fileio.write_text(run.architecture, "\n".join(lines) + "\n")
    plots.training_curve(history, run.path / "training_curve.png", spec.metrics[0])
    fileio.write_json(
        run.config,
        {
            **config,
            "info": data.info,
            "num_examples": {s: data.num_examples(s) for s in data.splits},
            "versions": versions(),
        },
    )
    metrics = {
        "task": config["task"],
        "dataset": config["dataset"],
        "epochs_run": state["epoch"],
        "restarts": state["restarts"],
        "workers": state["world_size"],
        "train_seconds": round(train_seconds, 1),
        "samples_per_s": _mean([h["samples_per_s"] for h in history]),
        "samples_per_s_per_worker": _mean([h["samples_per_s_per_worker"] for h in history]),
        "timing": _timing(timing or {}, state),
        "history": history,
        **scores,
    }
    fileio.write_json(run.metrics, metrics)
    return metrics


def _timing(driver: dict, state: dict) -> dict:
    """Where a run's seconds went: data loading and Ray start-up in the driver, start-up until the
    workers' ``fit`` (their TF import, data, model, strategy), ``fit`` itself and, inside it,
    saving per-epoch checkpoints (the gaps between epochs)."""
    out = {k: v for k, v in driver.items() if k != "started_at"}
    if "started_at" in driver and "fit_started_at" in state:
        out["until_fit_s"] = state["fit_started_at"] - driver["started_at"]
    out.update(
        {f"{k.removesuffix('_seconds')}_s": state[k] for k in ("fit_seconds", "checkpoint_seconds") if k in state}
    )
    return {k: round(v, 1) for k, v in out.items()}


def _float32_twin(trained, spec, config: dict, info: dict):
    """The task's model built in float32 with the weights of ``trained`` (trained under
    mixed_float16, whose weights are float32 already): what export and CPU inference want."""
    from tensorflow import keras

    keras.mixed_precision.set_global_policy("float32")
    twin = spec.build_model(config, info)
    twin.set_weights(trained.get_weights())
    return twin


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None
