"""The training loop every Ray worker runs: ``train_loop_per_worker(config)``.

``config`` carries the task name and scalars, never data: each worker loads the task's dataset
itself and reads its own shard. The model is built and compiled inside
``MultiWorkerMirroredStrategy.scope()`` (a single worker uses the default strategy). After every
epoch each worker reports its metrics and rank 0 reports a checkpoint (``model.keras``, the TF
training state with optimizer slots, and ``state.json`` with the epoch and history); a restarted
worker group resumes from ``ray.train.get_checkpoint()``. Rank 0 also writes TensorBoard scalars.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from rnnforge.core.env import WORKER_ENV

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_TF = "train_state"


def train_loop_per_worker(config: dict) -> None:
    """Train ``config["task"]`` on this worker's shard; report metrics and checkpoints to Ray."""
    for key, value in WORKER_ENV.items():  # in case the runtime env did not reach this process
        os.environ.setdefault(key, value)
    import ray.train
    import tensorflow as tf
    from tensorflow import keras

    from rnnforge.models import get_spec
    from rnnforge.models.common import compile_model
    from rnnforge.pipeline.input import steps_per_epoch, worker_dataset

    tf.get_logger().setLevel("WARNING")
    # Ray Train logs every report at INFO through the root logger; they drown the progress lines.
    logging.getLogger().setLevel(logging.WARNING)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    # One worker has nothing to all-reduce: the default strategy spares MultiWorkerMirroredStrategy's
    # per-step collectives (about 20% of a small model's step time on CPU, benchmarks/scaling.py).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world_size > 1 else tf.distribute.get_strategy()
    keras.utils.set_random_seed(config["seed"])

    spec = get_spec(config["task"])
    data = spec.load_data(config)
    (x_train, y_train), (x_valid, y_valid) = data.splits["train"], data.splits["valid"]
    y_train = spec.targets_for_training(x_train, y_train, data.info)
    y_valid = spec.targets_for_training(x_valid, y_valid, data.info)
    global_batch = config["batch_size"] * world_size
    steps = steps_per_epoch(data.num_examples("train"), global_batch)
    valid_steps = steps_per_epoch(len(x_valid), global_batch)

    def datasets(x, y, shuffle):
        def make(input_context):
            return worker_dataset(
                x,
                y,
                batch_size=input_context.get_per_replica_batch_size(global_batch),
                num_shards=input_context.num_input_pipelines,
                shard_index=input_context.input_pipeline_id,
                seed=config["seed"],
                shuffle=shuffle,
            )

        return strategy.distribute_datasets_from_function(make)

    def train_datasets():
        if data.train_stream is None:
            return datasets(x_train, y_train, True)
        return strategy.distribute_datasets_from_function(
            lambda input_context: data.train_stream(
                input_context, input_context.get_per_replica_batch_size(global_batch), config["seed"]
            )
        )

    if config.get("mixed_precision"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        model = spec.build_model(config, data.info)
        if config.get("mixed_precision"):
            model = _float32_outputs(model)
        compile_model(model, spec, config, total_steps=steps * config["epochs"])
    tf_state = tf.train.Checkpoint(model=model, optimizer=model.optimizer)

    state = {"epoch": 0, "history": [], "restarts": 0, "world_size": world_size}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            tf_state.restore(str(Path(ckpt_dir) / CHECKPOINT_TF / "ckpt"))
            state = json.loads((Path(ckpt_dir) / CHECKPOINT_STATE).read_text())
        state["restarts"] += 1
        if rank == 0:
            _say(f"resumed from checkpoint after epoch {state['epoch']} (restart {state['restarts']})")

    def save_and_report(metrics: dict) -> None:
        # Every worker writes: reading sync-on-read variables (BatchNorm statistics, metrics) is an
        # all-reduce under MultiWorkerMirroredStrategy, so a chief-only save deadlocks. Only
        # rank 0's files are kept; every worker reports (Ray's barrier).
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rnnforge-ckpt-") as ckpt_dir:
            model.save(Path(ckpt_dir) / CHECKPOINT_MODEL, save_format="keras_v3")
            tf_state.write(str(Path(ckpt_dir) / CHECKPOINT_TF / "ckpt"))
            (Path(ckpt_dir) / CHECKPOINT_STATE).write_text(json.dumps(state))
            report_checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir) if rank == 0 else None
            ray.train.report(metrics, checkpoint=report_checkpoint)
        state["checkpoint_seconds"] = state.get("checkpoint_seconds", 0.0) + time.perf_counter() - began

    class ReportEachEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            samples_per_s = steps * global_batch / seconds
            entry = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in (logs or {}).items()},
                "seconds": round(seconds, 3),
                "samples_per_s": round(samples_per_s, 1),
                "samples_per_s_per_worker": round(samples_per_s / world_size, 1),
            }
            state["epoch"] = epoch + 1
            state["history"].append(entry)
            if state["epoch"] % config["checkpoint_every"] == 0:
                save_and_report(entry)
            else:
                ray.train.report(entry, checkpoint=None)
            if rank == 0:
                _print_progress(entry, config["epochs"], spec.metrics[0])
                if summaries:
                    summaries.write(entry)

    summaries = _EpochSummaries(config["tensorboard_dir"]) if rank == 0 and config.get("tensorboard_dir") else None
    callbacks = [ReportEachEpoch()]
    if config["patience"] > 0:
        callbacks.insert(
            0, keras.callbacks.EarlyStopping(monitor="val_loss", patience=config["patience"], restore_best_weights=True)
        )
    fit_started = time.perf_counter()
    state["fit_started_at"] = time.time()  # wall clock: the driver measures its start-up with it
    if state["epoch"] < config["epochs"]:
        model.fit(
            train_datasets(),
            epochs=config["epochs"],
            initial_epoch=state["epoch"],
            steps_per_epoch=steps,
            validation_data=datasets(x_valid, y_valid, False),
            validation_steps=valid_steps,
            callbacks=callbacks,
            verbose=0,
        )
    state["finished"] = True
    state["fit_seconds"] = time.perf_counter() - fit_started
    if rank == 0:
        _say(f"training done in {state['fit_seconds']:.1f}s; saving the final model")
    save_and_report({"epoch": state["epoch"], "finished": True})


def _float32_outputs(model):
    """``model`` with its outputs cast to float32: under mixed_float16 a float16 softmax or loss
    loses precision (the Keras mixed-precision guide's advice)."""
    from tensorflow import keras

    outputs = [
        keras.layers.Activation("linear", dtype="float32", name=f"float32_{i}")(out)
        for i, out in enumerate(model.outputs)
    ]
    return keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


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


def _say(line: str) -> None:
    # Ray Train patches print() into its logger, which echoes each line twice on the driver.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _print_progress(entry: dict, epochs: int, metric: str) -> None:
    remaining = (epochs - entry["epoch"]) * entry["seconds"]
    _say(
        f"epoch {entry['epoch']}/{epochs}  loss {entry['loss']:.4f}  {metric} {entry.get(metric, float('nan')):.4f}  "
        f"val_loss {entry.get('val_loss', float('nan')):.4f}  val_{metric} {entry.get('val_' + metric, float('nan')):.4f}  "
        f"{entry['samples_per_s']:.0f} samples/s ({entry['samples_per_s_per_worker']:.0f}/worker)  "
        f"{entry['seconds']:.1f}s  eta {remaining:.0f}s"
    )
