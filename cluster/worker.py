"""The training loop every Ray worker runs: ``train_loop_per_worker(loop_config)``.

``loop_config`` is plain data: ``config`` (``TrainConfig.to_dict()``: the task name and scalars,
never data) and ``tensorboard_dir`` beside it. Each worker loads the task's dataset itself and
reads its own shard. The model, the batches and ``model.fit`` are ``cluster.fit``'s (which the
benchmarks train with too), under ``MultiWorkerMirroredStrategy`` (a single worker uses the
default strategy). After every
epoch each worker reports its metrics, and every ``--checkpoint-every`` epochs a checkpoint
(``model.keras``, the TF training state with optimizer slots, and ``state.json`` with the epoch
and history) of which Ray keeps rank 0's; a restarted worker group resumes from
``ray.train.get_checkpoint()``. Rank 0 writes TensorBoard scalars (and, with
``--mlflow-tracking-uri``, MLflow metrics). Workers print nothing: the driver turns rank 0's
reports into the console's lines (``cluster.progress``).

The global batch is fixed for the whole run: ``--batch-size`` x ``--workers``. An elastic group
(``--workers MIN-MAX``) that restarts at another size splits that same global batch among its
workers (``cluster.fit.group_batch``), so steps per epoch, the learning-rate schedule (which counts optimizer
steps) and the learning rate carry on unchanged from the checkpoint; the resize goes into
``state["resizes"]`` and metrics.json.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from rnnforge.cluster.devices import (
    check_devices,
    describe_worker,
    group_refusal,
    make_strategy,
    write_device_record,
)
from rnnforge.cluster.fit import Run, batches, fit, prepare
from rnnforge.core.config import TrainConfig
from rnnforge.core.env import WORKER_ENV
from rnnforge.core.tracking import log_epoch

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_TF = "train_state"


def train_loop_per_worker(loop_config: dict) -> None:
    """Train ``loop_config["config"]``'s task on this worker's shard; report metrics and checkpoints to Ray."""
    _set_up_process()
    import ray.train

    config = TrainConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    strategy = _strategy_on_checked_devices(config, rank, world_size, loop_config.get("devices"))
    if strategy is None:  # a worker of the group cannot use its devices: no one trains
        return
    run = prepare(config, world_size=world_size, strategy=strategy)
    tensorboard_dir = loop_config.get("tensorboard_dir") if rank == 0 else None
    tracking = loop_config.get("tracking") if rank == 0 else None
    training = WorkerTraining(
        config,
        run.model,
        rank,
        world_size,
        run.steps * run.global_batch,
        run.spec.metrics[0],
        tensorboard_dir,
        tracking,
    )
    training.resume(ray.train.get_checkpoint())
    training.fit(run, *batches(run))


def _set_up_process() -> None:
    """The worker's environment, quiet loggers, and GPU memory that grows as it is needed."""
    for key, value in WORKER_ENV.items():  # in case the runtime env did not reach this process
        os.environ.setdefault(key, value)
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    # Ray Train logs every report at INFO through the root logger; they drown the progress lines.
    logging.getLogger().setLevel(logging.WARNING)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def _strategy_on_checked_devices(config: TrainConfig, rank: int, world_size: int, records_folder: str | None):
    """The distribution strategy, once this worker's devices are checked (``cluster.devices``);
    the worker's record goes to ``records_folder`` for the driver. ``None``: a worker of the group
    cannot use its devices, which its record says."""
    record = check_devices(describe_worker(rank, config.mixed_precision), config.allow_cpu_fallback)
    if group_refusal(records_folder, record, world_size):
        return None  # the driver reports it from the records
    strategy, record = make_strategy(world_size, record)
    if records_folder:
        write_device_record(records_folder, record)
    return strategy


class WorkerTraining:
    """One worker's ``model.fit``: resuming, and what the end of each epoch does (report to Ray,
    checkpoint, progress line, TensorBoard scalars).

    ``state`` (epoch, history, restarts, world size, timings) is saved with every checkpoint and
    read back on resume; ``samples_per_epoch`` is steps x global batch.
    """

    def __init__(
        self,
        config: TrainConfig,
        model,
        rank: int,
        world_size: int,
        samples_per_epoch: int,
        metric: str,
        tensorboard_dir: str | None = None,
        tracking: dict | None = None,
    ):
        import tensorflow as tf

        self.config, self.model, self.rank, self.world_size = config, model, rank, world_size
        self.samples_per_epoch, self.metric = samples_per_epoch, metric
        self.tf_state = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.state = {"epoch": 0, "history": [], "restarts": 0, "world_size": world_size}
        self.summaries = _EpochSummaries(tensorboard_dir) if tensorboard_dir else None
        self.tracking = tracking  # rank 0 with --mlflow-tracking-uri: the MLflow run (core.tracking)
        self.epoch_started = 0.0
        self.resumed_after = 0
        self.resized_from: int | None = None

    def resume(self, checkpoint) -> None:
        """Restore weights, optimizer slots and ``state`` from Ray's last checkpoint, if any."""
        if not checkpoint:
            return
        with checkpoint.as_directory() as ckpt_dir:
            self.tf_state.restore(str(Path(ckpt_dir) / CHECKPOINT_TF / "ckpt"))
            self.state = json.loads((Path(ckpt_dir) / CHECKPOINT_STATE).read_text())
        self.state["restarts"] += 1
        self.resumed_after = self.state["epoch"]
        if self.state["world_size"] != self.world_size:  # an elastic group restarted at another size
            self.resized_from = self.state["world_size"]
            self.state.setdefault("resizes", []).append(
                {
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "epoch": self.state["epoch"],
                    "from": self.state["world_size"],
                    "to": self.world_size,
                }
            )
            self.state["world_size"] = self.world_size

    def fit(self, run: Run, train, valid) -> None:
        """Train from the resumed epoch to ``config.epochs`` (``cluster.fit``: early stopping may
        end sooner), then save and report the final model."""
        from tensorflow import keras

        progress = keras.callbacks.LambdaCallback(on_epoch_begin=self.begin_epoch, on_epoch_end=self.end_epoch)
        fit_started = time.perf_counter()
        self.state["fit_started_at"] = time.time()  # wall clock: the driver measures its start-up with it
        if not self.state.get("finished") and self.state["epoch"] < self.config.epochs:  # finished: no epoch more
            fit(run, train, valid, callbacks=[progress], initial_epoch=self.state["epoch"])
        self.state["finished"] = True
        self.state["fit_seconds"] = time.perf_counter() - fit_started
        self.save_and_report({"epoch": self.state["epoch"], "finished": True, "fit_seconds": self.state["fit_seconds"]})

    def begin_epoch(self, epoch: int, logs=None) -> None:
        self.epoch_started = time.perf_counter()

    def end_epoch(self, epoch: int, logs=None) -> None:
        """Record the epoch; report it to Ray (with a checkpoint every ``checkpoint_every`` epochs)."""
        seconds = time.perf_counter() - self.epoch_started
        samples_per_s = self.samples_per_epoch / seconds
        entry = {
            "epoch": epoch + 1,
            **{k: float(v) for k, v in (logs or {}).items()},
            "seconds": round(seconds, 3),
            "samples_per_s": round(samples_per_s, 1),
            "samples_per_s_per_worker": round(samples_per_s / self.world_size, 1),
        }
        self.state["epoch"] = epoch + 1
        self.state["history"].append(entry)
        if self.state["epoch"] % self.config.checkpoint_every == 0:
            self.save_and_report(entry)
        else:
            import ray.train

            ray.train.report(self.reported(entry), checkpoint=None)
        if self.rank == 0 and self.summaries:
            self.summaries.write(entry)
        log_epoch(self.tracking, entry)  # rank 0's only

    def reported(self, metrics: dict) -> dict:
        """``metrics`` as reported to Ray: with the restarts so far, the epoch the last one resumed
        after and the group's size (and the size before, when that restart resized it), from which
        the driver's console says that training resumed; the driver reads ``world_size`` at the end."""
        return {
            **metrics,
            "restarts": self.state["restarts"],
            "resumed_after": self.resumed_after,
            "world_size": self.world_size,
            "resized_from": self.resized_from,
        }

    def save_and_report(self, metrics: dict) -> None:
        """Every worker saves a checkpoint and reports; Ray keeps rank 0's.

        Every worker writes: reading sync-on-read variables (BatchNorm statistics, metrics) is an
        all-reduce under MultiWorkerMirroredStrategy, so a chief-only save deadlocks. Every
        worker reports too (Ray's barrier)."""
        import ray.train

        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rnnforge-ckpt-") as ckpt_dir:
            self.model.save(Path(ckpt_dir) / CHECKPOINT_MODEL, save_format="keras_v3")
            self.tf_state.write(str(Path(ckpt_dir) / CHECKPOINT_TF / "ckpt"))
            (Path(ckpt_dir) / CHECKPOINT_STATE).write_text(json.dumps(self.state))
            report_checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir) if self.rank == 0 else None
            ray.train.report(self.reported(metrics), checkpoint=report_checkpoint)
        self.state["checkpoint_seconds"] = self.state.get("checkpoint_seconds", 0.0) + time.perf_counter() - began


class _EpochSummaries:
    """Per-epoch TensorBoard scalars in ``log_dir/train`` and ``log_dir/validation`` (rank 0 only),
    laid out like Keras' TensorBoard callback, plus samples/s. Written with ``tf.summary.write``
    and the scalars plugin's metadata, so training does not need the tensorboard package."""

    def __init__(self, log_dir: str):
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        self.writers = {run: tf.summary.create_file_writer(str(Path(log_dir) / run)) for run in ("train", "validation")}
        self.metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))

    def write(self, entry: dict) -> None:
        import tensorflow as tf

        for key, value in entry.items():
            if key == "epoch":
                continue
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[run].as_default():
                tf.summary.write(
                    f"epoch_{name}", tf.constant(float(value)), step=entry["epoch"], metadata=self.metadata
                )
        for writer in self.writers.values():
            writer.flush()
