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

from rnnforge import WORKER_ENV, fileio, plots
from rnnforge.errors import UserError
from rnnforge.machine import versions
from rnnforge.run_dir import RunDir

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
    "checkpoint_every": 1,  # epochs between checkpoints (the last epoch always gets one)
}


def resolve_config(task: str, options: dict) -> dict:
    """Merge common defaults, the task's defaults and the user's options (``None`` = not given)."""
    from models import get_spec

    spec = get_spec(task)
    config = {**COMMON_DEFAULTS, **spec.defaults}
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(k for k in given if k not in config)
    if foreign:
        raise UserError(f"--{foreign[0].replace('_', '-')} does not apply to task {task!r}")
    config.update(given)
    if config["data_dir"]:
        config["data_dir"] = str(Path(config["data_dir"]).expanduser().resolve())
    config["task"] = task
    config["dataset"] = config["dataset"] or spec.default_dataset
    if config["dataset"] not in spec.datasets:
        raise UserError(f"unknown dataset {config['dataset']!r} for task {task!r} (--dataset): "
                        f"expected one of {', '.join(spec.datasets)}")
    for key in ("workers", "cpus_per_worker", "epochs", "batch_size", "units", "max_len", "max_per_class", "checkpoint_every",
                "frames", "frame_size"):
        if config.get(key) is not None and config[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    if not 0.0 <= config["dropout"] < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {config['dropout']}")
    return config


def prepare_run_dir(path: Path, overwrite: bool) -> Path:
    """Check ``--run-dir`` before any work: refuse to clobber a finished run unless ``overwrite``.

    A run dir with checkpoints but no config.json is an interrupted run: Ray Train resumes it
    from its last checkpoint.
    """
    run = RunDir(Path(path))
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--run-dir {run.path} is a file, expected a directory")
    if run.config.exists():
        if not overwrite:
            raise UserError(f"--run-dir {run.path} already holds a finished run; "
                            "pass --overwrite to replace it or choose another --run-dir")
        for artifact in run.artifacts():
            if artifact.is_dir():
                shutil.rmtree(artifact)
            elif artifact.exists():
                artifact.unlink()
    elif run.checkpoints.is_dir():
        print(f"resuming the interrupted run in {run.path} from its last checkpoint", flush=True)
    return run.path


def worker_env(config: dict) -> dict:
    """Environment variables every Ray worker gets through the runtime env."""
    threads = str(config["cpus_per_worker"])
    return {**WORKER_ENV, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}


def connect(config: dict, address: str | None) -> None:
    """Start a local Ray instance (dashboard on 127.0.0.1) or join the cluster at ``address``."""
    import ray

    runtime_env = {"env_vars": worker_env(config)}
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level="WARNING")
        return
    ray.init(num_cpus=os.cpu_count() or 1, dashboard_host="127.0.0.1", include_dashboard=True,
             runtime_env=runtime_env, logging_level="WARNING")


def check_resources(config: dict) -> None:
    """Refuse a run the cluster can never schedule, instead of waiting forever."""
    import ray

    total = ray.cluster_resources()
    need_cpu = config["workers"] * config["cpus_per_worker"]
    need_gpu = config["workers"] * config["gpus_per_worker"]
    if need_cpu > total.get("CPU", 0):
        raise UserError(f"--workers {config['workers']} x --cpus-per-worker {config['cpus_per_worker']} needs "
                        f"{need_cpu} CPUs; the Ray cluster has {total.get('CPU', 0):g}")
    if need_gpu > total.get("GPU", 0):
        raise UserError(f"--workers {config['workers']} x --gpus-per-worker {config['gpus_per_worker']} needs "
                        f"{need_gpu} GPUs; the Ray cluster has {total.get('GPU', 0):g}")


def train(config: dict, run_dir: Path, address: str | None = None) -> dict:
    """Run distributed training for ``config`` and write the run dir; returns metrics.json's content."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from cluster.worker import train_loop_per_worker
    from models import get_spec

    run = RunDir(Path(run_dir).resolve())
    started = time.perf_counter()
    # Load the data once here first: bad input fails with one line before any Ray worker starts.
    data = get_spec(config["task"]).load_data(config)
    print(f"{config['task']}: dataset {config['dataset']}, "
          + ", ".join(f"{s} {data.num_examples(s)}" for s in data.splits) + " examples", flush=True)
    for split in ("train", "valid"):  # an empty shard would leave a worker waiting forever
        if data.num_examples(split) < config["workers"]:
            raise UserError(f"the {split} split has {data.num_examples(split)} example(s), fewer than --workers "
                            f"{config['workers']}: every worker needs its own shard; add data or use fewer workers")
    connect(config, address)
    try:
        check_resources(config)
        run.path.mkdir(parents=True, exist_ok=True)
        use_gpu = config["gpus_per_worker"] > 0
        resources = {"CPU": config["cpus_per_worker"]}
        if use_gpu:
            resources["GPU"] = config["gpus_per_worker"]
        trainer = TensorflowTrainer(
            train_loop_per_worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=config["workers"], use_gpu=use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name="train",
                storage_path=str(run.checkpoints),
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
    return finish_run(config, run, result.checkpoint, time.perf_counter() - started)


def finish_run(config: dict, run: RunDir, checkpoint, train_seconds: float) -> dict:
    """Copy the final model out of ``checkpoint``, score it on the test split, write the run dir."""
    from tensorflow import keras

    from cluster.worker import CHECKPOINT_MODEL, CHECKPOINT_STATE
    from models import get_spec

    spec = get_spec(config["task"])
    data = spec.load_data(config)
    with checkpoint.as_directory() as ckpt_dir:
        state = json.loads((Path(ckpt_dir) / CHECKPOINT_STATE).read_text())
        trained = keras.models.load_model(Path(ckpt_dir) / CHECKPOINT_MODEL, compile=False)
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
    fileio.write_json(run.config, {**config, "info": data.info, "num_examples": {
        s: data.num_examples(s) for s in data.splits}, "versions": versions()})
    metrics = {
        "task": config["task"],
        "dataset": config["dataset"],
        "epochs_run": state["epoch"],
        "restarts": state["restarts"],
        "workers": state["world_size"],
        "train_seconds": round(train_seconds, 1),
        "samples_per_s": _mean([h["samples_per_s"] for h in history]),
        "samples_per_s_per_worker": _mean([h["samples_per_s_per_worker"] for h in history]),
        "history": history,
        **scores,
    }
    fileio.write_json(run.metrics, metrics)
    return metrics


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None
