"""One in-process fit: a Ray worker's model, batches and ``model.fit``, without Ray.

The Ray worker (``cluster.worker``) and every benchmark train through these functions, so each
thing that shapes a run has one rule wherever it is trained: the global batch (``group_batch``),
the worker's sharded, reshuffled batches or the task's stream, one full pass over the validation
split per epoch (``validation_batches``), the learning-rate warm-up (``compile_model``) and early
stopping that counts from ``--patience-start`` (``early_stopping``). Importing this module needs
neither Ray nor TensorFlow; outside Ray the strategy is TensorFlow's default one (one replica).

    run = prepare(config)              # seed, data, model built and compiled
    history = fit(run, *batches(run))  # run.model holds the trained weights
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from rnnforge.core.config import TrainConfig
from rnnforge.pipeline.input import validation_batches


@dataclass
class Run:
    """What ``prepare`` made: the task's spec, data and compiled model, the global batch and the
    optimizer steps per epoch, under ``strategy``."""

    config: TrainConfig
    spec: Any
    data: Any  # models.spec.TaskData
    model: Any
    global_batch: int
    steps: int
    strategy: Any


def group_batch(config: TrainConfig, world_size: int) -> int:
    """The global batch of a group of ``world_size`` workers: ``--batch-size`` x ``--workers``
    split evenly among them (rounded down to a multiple of ``world_size``, as each worker's batch
    must be whole). A fixed group gets exactly ``batch_size * workers``."""
    return max(1, config.batch_size * config.workers // world_size) * world_size


def prepare(config: TrainConfig, *, world_size: int = 1, strategy=None, data=None, model_options=None) -> Run:
    """Seed, load the task's data (unless ``data`` is given) and build and compile its model inside
    ``strategy.scope()`` (mixed_float16 if asked), for ``world_size`` workers.

    ``model_options``: keywords for the task's builder (a benchmark's candidate architecture)."""
    import tensorflow as tf
    from tensorflow import keras

    from rnnforge.models import get_spec
    from rnnforge.pipeline.input import steps_per_epoch

    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    spec = get_spec(config.task)
    data = spec.load_data(config) if data is None else data
    global_batch = group_batch(config, world_size)
    steps = steps_per_epoch(data.num_examples("train"), global_batch)
    model = _build_model(spec, config, data.info, strategy, steps * config.epochs, model_options or {})
    return Run(config, spec, data, model, global_batch, steps, strategy)


def batches(run: Run) -> tuple:
    """This worker's endless training batches, as ``run.strategy`` distributes them, and one pass
    over the whole validation split in global batches."""
    data, spec = run.data, run.spec
    train = run.strategy.distribute_datasets_from_function(functools.partial(training_batches, run))
    x_valid, y_valid = data.splits["valid"]
    valid = validation_batches(x_valid, spec.targets_for_training(x_valid, y_valid, data.info), run.global_batch)
    return train, valid


def training_batches(run: Run, input_context):
    """One input pipeline's endless training batches (``input_context``: which of how many, and
    its share of the global batch): its shard of the in-memory split, reshuffled every pass, or
    its part of the task's stream (``TaskData.train_stream``)."""
    from rnnforge.pipeline.input import worker_dataset

    data, batch_size = run.data, input_context.get_per_replica_batch_size(run.global_batch)
    if data.train_stream is not None:
        return data.train_stream(input_context, batch_size, run.config.seed)
    x, y = data.splits["train"]
    return worker_dataset(
        x,
        run.spec.targets_for_training(x, y, data.info),
        batch_size=batch_size,
        num_shards=input_context.num_input_pipelines,
        shard_index=input_context.input_pipeline_id,
        seed=run.config.seed,
    )


def fit(run: Run, train, valid, *, callbacks=(), initial_epoch: int = 0):
    """``model.fit`` from ``initial_epoch`` to ``--epochs``, early stopping first among the
    callbacks (it may end sooner and restores the best weights); Keras' ``History``.

    ``train``: ``batches(run)``'s endless batches, ``run.steps`` per epoch; or an ``(x, y)`` pair of
    arrays, which Keras reshuffles and runs whole each epoch in global batches, the last one
    partial (a benchmark's input that its recorded rows were measured with)."""
    if isinstance(train, tuple):
        x, y = train
        inputs = {"x": x, "y": y, "batch_size": run.global_batch, "shuffle": True}
    else:
        inputs = {"x": train, "steps_per_epoch": run.steps}
    stopping = early_stopping(run.config)
    return run.model.fit(
        epochs=run.config.epochs,
        initial_epoch=initial_epoch,
        validation_data=valid,
        callbacks=[stopping, *callbacks] if stopping else list(callbacks),
        verbose=0,
        **inputs,
    )


def early_stopping(config: TrainConfig):
    """Keras early stopping on ``val_loss`` (``--patience``; ``None`` when it is 0), best weights
    restored. It counts (and keeps best weights) only from epoch ``--patience-start`` on: a model
    that sits at chance for a few epochs before it learns is not stopped there."""
    from tensorflow import keras

    if config.patience <= 0:
        return None
    return keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=config.patience,
        restore_best_weights=True,
        start_from_epoch=config.patience_start,
    )


def _build_model(spec, config: TrainConfig, info: dict, strategy, total_steps: int, model_options: dict):
    from tensorflow import keras

    from rnnforge.models.common import compile_model

    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        model = spec.build_model(config, info, **model_options)
        if config.mixed_precision:
            model = _float32_outputs(model)
        compile_model(model, spec, config, total_steps=total_steps, info=info)
    return model


def _float32_outputs(model):
    """``model`` with its outputs cast to float32: under mixed_float16 a float16 softmax or loss
    loses precision (the Keras mixed-precision guide's advice)."""
    from tensorflow import keras

    outputs = [
        keras.layers.Activation("linear", dtype="float32", name=f"float32_{i}")(out)
        for i, out in enumerate(model.outputs)
    ]
    return keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
