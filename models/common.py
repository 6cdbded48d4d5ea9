"""What every model shares: the recurrent cell, dropout, gradient clipping and the learning-rate
schedule with its warm-up (the usual remedies for RNN training difficulties), the averaged
ensemble's training and served outputs, the classifiers' scores and plot, and the warning for a
classifier that ended at chance.

``recurrent_dropout`` is never used: it disables the cuDNN LSTM/GRU kernels. A GRU always uses
``reset_after=True``, the cuDNN-compatible form.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from rnnforge.core.config import TrainConfig


def recurrent_layer(config: TrainConfig, units: int, *, return_sequences: bool, name: str):
    """An LSTM or GRU layer (``config.rnn``) with input dropout ``config.dropout``."""
    from tensorflow import keras

    kwargs = {"return_sequences": return_sequences, "dropout": config.dropout, "name": name}
    if config.rnn == "gru":
        return keras.layers.GRU(units, reset_after=True, **kwargs)
    return keras.layers.LSTM(units, **kwargs)


def ensemble_output(outputs: list, *, average: bool):
    """One output from the members' ``outputs`` (one tensor: itself). Training (``average=False``):
    concatenated on the last axis, so a loss that averages over that axis against targets tiled
    once per member (``tile_targets``) is the mean of the members' own losses and each member
    learns as a network trained alone would. Serving: their average."""
    from tensorflow import keras

    if len(outputs) == 1:
        return outputs[0]
    if average:
        return keras.layers.Average(name="ensemble_average")(outputs)
    return keras.layers.Concatenate(name="ensemble_members")(outputs)


def tile_targets(targets: np.ndarray, members: int) -> np.ndarray:
    """Targets ``[..., k]`` repeated for ``members`` members: ``[..., members * k]`` (``ensemble_output``)."""
    return targets if members == 1 else np.tile(targets, (1,) * (targets.ndim - 1) + (members,))


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    """Steps of the learning-rate warm-up: ``--lr-warmup`` epochs, at most a quarter of the run."""
    per_epoch = total_steps / max(1, config.epochs)
    return int(min(round(config.lr_warmup * per_epoch), total_steps // 4))


def learning_rate(config: TrainConfig, total_steps: int):
    """The learning rate or schedule of ``config.lr_schedule`` over ``total_steps`` steps, after a
    linear warm-up from 0 (``warmup_steps``) when there is one."""
    from tensorflow import keras

    base = config.learning_rate
    warmup = warmup_steps(config, total_steps)
    decay_steps = max(1, total_steps - warmup)
    if config.lr_schedule == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(base, decay_steps=decay_steps, alpha=0.05)
    elif config.lr_schedule == "exponential":
        schedule = keras.optimizers.schedules.ExponentialDecay(base, decay_steps=decay_steps, decay_rate=0.05)
    else:
        schedule = base
    return warmup_schedule()(schedule, warmup) if warmup else schedule


@functools.cache
def warmup_schedule():
    """The ``WarmUp`` schedule class (made on first use: TensorFlow is imported only then)."""
    from tensorflow import keras

    @keras.utils.register_keras_serializable(package="rnnforge")
    class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
        """Linear from 0 to the schedule's first value over ``steps``, then ``schedule`` (a
        schedule or a constant) counted from the end of the warm-up."""

        def __init__(self, schedule, steps: int):
            self.schedule, self.steps = schedule, int(steps)

        def __call__(self, step):
            import tensorflow as tf

            step = tf.cast(step, tf.float32)
            after = tf.maximum(step - self.steps, 0.0)
            rate = self.schedule(after) if callable(self.schedule) else tf.constant(self.schedule, tf.float32)
            return tf.where(step < self.steps, rate * (step + 1) / (self.steps + 1), rate)

        def get_config(self):
            schedule = self.schedule
            if callable(schedule):
                schedule = keras.optimizers.schedules.serialize(schedule)
            return {"schedule": schedule, "steps": self.steps}

        @classmethod
        def from_config(cls, config):
            schedule = config["schedule"]
            if isinstance(schedule, dict):
                schedule = keras.optimizers.schedules.deserialize(schedule)
            return cls(schedule, config["steps"])

    return WarmUp


def compile_model(model, spec, config: TrainConfig, total_steps: int, info: dict | None = None) -> None:
    """Compile ``model`` with Adam, gradient clipping by global norm, and the task's loss/metrics
    (the loss for the run of data ``info``: ``TaskSpec.loss_for``)."""
    from tensorflow import keras

    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate(config, total_steps),
        global_clipnorm=config.clipnorm or None,
    )
    model.compile(optimizer=optimizer, loss=spec.loss_for(config, info), metrics=list(spec.metrics))


def classification_scores(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, info: dict) -> dict:
    """Top-1 and top-3 accuracy of class probabilities ``y_pred`` against labels ``y_true``."""
    top = np.argsort(-y_pred, axis=1)
    return {
        "accuracy": float(np.mean(top[:, 0] == y_true)),
        "top3_accuracy": float(np.mean((top[:, :3] == y_true[:, None]).any(axis=1))),
    }


def confusion_plot(x, y, predictions, data, split: str, out_dir) -> list:
    """Confusion matrix of the split."""
    from rnnforge.core import plots

    return [
        plots.confusion_matrix(
            y, predictions.argmax(axis=1), data.info["class_names"], out_dir / "confusion_matrix.png"
        )
    ]


def chance_warning(accuracy: float | None, classes: int, examples: int, split: str = "validation") -> str | None:
    """One line when a classifier's ``accuracy`` on ``examples`` clips of ``split`` is within noise of
    chance (1/``classes``): not above chance + 2 standard errors of a guesser's accuracy."""
    if accuracy is None or classes < 2 or examples < 1:
        return None
    chance = 1 / classes
    noise = 2 * math.sqrt(chance * (1 - chance) / examples)
    if accuracy > chance + noise:
        return None
    return (
        f"warning: {split} accuracy {accuracy:.3f} is within noise of chance ({chance:.3f} for {classes} classes, "
        f"{examples} examples): the model did not learn; try more --epochs and a larger --patience-start, "
        "a lower --learning-rate, or more examples per class (video: --augment)"
    )
