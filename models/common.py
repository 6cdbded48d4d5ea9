"""What every model shares: the recurrent cell, dropout, gradient clipping and the learning-rate
schedule (the usual remedies for RNN training difficulties), and the classifiers' scores and plot.

``recurrent_dropout`` is never used: it disables the cuDNN LSTM/GRU kernels. A GRU always uses
``reset_after=True``, the cuDNN-compatible form.
"""

from __future__ import annotations

import numpy as np

from rnnforge.core.config import TrainConfig


def recurrent_layer(config: TrainConfig, units: int, *, return_sequences: bool, name: str):
    """An LSTM or GRU layer (``config.rnn``) with input dropout ``config.dropout``."""
    from tensorflow import keras

    kwargs = {"return_sequences": return_sequences, "dropout": config.dropout, "name": name}
    if config.rnn == "gru":
        return keras.layers.GRU(units, reset_after=True, **kwargs)
    return keras.layers.LSTM(units, **kwargs)


def learning_rate(config: TrainConfig, total_steps: int):
    """The learning rate or schedule of ``config.lr_schedule`` over ``total_steps`` steps."""
    from tensorflow import keras

    base = config.learning_rate
    schedule = config.lr_schedule
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, decay_steps=max(1, total_steps), alpha=0.05)
    if schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(base, decay_steps=max(1, total_steps), decay_rate=0.05)
    return base


def compile_model(model, spec, config: TrainConfig, total_steps: int) -> None:
    """Compile ``model`` with Adam, gradient clipping by global norm, and the task's loss/metrics."""
    from tensorflow import keras

    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate(config, total_steps),
        global_clipnorm=config.clipnorm or None,
    )
    model.compile(optimizer=optimizer, loss=spec.loss, metrics=list(spec.metrics))


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
