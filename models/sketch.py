"""Sketch task: classify drawings given as stroke-3 sequences (dx, dy, pen_lifted).

Model: a Conv1D front end with BatchNorm (two strided blocks shorten the sequence 4x), two
stacked recurrent layers (LSTM or GRU), softmax over the classes - the architecture of Géron's
ch. 15 QuickDraw solution and TensorFlow's QuickDraw RNN tutorial. The model takes raw pixel
offsets; their scaling (Sketch-RNN's delta standard deviation) lives inside it, so the ONNX
model needs no pre-processing. Train it with ``rnnforge train sketch``.
"""

from __future__ import annotations

import numpy as np

from models.spec import OnnxSpec, TaskData, TaskSpec, TensorSpec
from pipeline import strokes

CONV_FILTERS = (48, 64, 96)
CONV_STRIDES = (1, 2, 2)
KERNEL_SIZE = 5


def load_synthetic(config: dict) -> TaskData:
    """The embedded procedurally drawn dataset (``pipeline.sketch_synthetic``)."""
    from pipeline import sketch_synthetic

    max_len = config["max_len"]
    splits, raw_train = {}, None
    for split in ("train", "valid", "test"):
        drawings, labels = sketch_synthetic.generate(split, seed=config["data_seed"])
        raw_train = drawings if split == "train" else raw_train
        splits[split] = (strokes.pad_or_crop(drawings, max_len), labels)
    info = {
        "class_names": list(sketch_synthetic.CLASS_NAMES),
        "delta_scale": strokes.delta_scale(raw_train),
        "max_len": max_len,
    }
    return TaskData(splits=splits, info=info)


def build_model(config: dict, info: dict):
    """Conv1D + stacked RNN classifier: float32 ``[batch, time, 3]`` -> ``[batch, classes]``."""
    from tensorflow import keras

    from models.common import recurrent_layer

    scale = info["delta_scale"]
    inputs = keras.Input(shape=(None, 3), name="strokes", dtype="float32")
    # (dx, dy) / scale, pen_lifted unchanged: a fixed Normalization exports as Sub/Div.
    x = keras.layers.Normalization(mean=[0.0, 0.0, 0.0], variance=[scale**2, scale**2, 1.0], name="scale")(inputs)
    for i, (filters, stride) in enumerate(zip(CONV_FILTERS, CONV_STRIDES)):
        x = keras.layers.Conv1D(filters, KERNEL_SIZE, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = recurrent_layer(config, config["units"], return_sequences=True, name="rnn0")(x)
    x = recurrent_layer(config, config["units"], return_sequences=False, name="rnn1")(x)
    x = keras.layers.Dropout(config["dropout"], name="dropout")(x)
    outputs = keras.layers.Dense(len(info["class_names"]), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="sketch_classifier")


def score(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, info: dict) -> dict:
    """Top-1 and top-3 accuracy of class probabilities ``y_pred`` against labels ``y_true``."""
    top = np.argsort(-y_pred, axis=1)
    return {
        "accuracy": float(np.mean(top[:, 0] == y_true)),
        "top3_accuracy": float(np.mean((top[:, :3] == y_true[:, None]).any(axis=1))),
    }


def report_plots(x, y, predictions, data: TaskData, split: str, out_dir) -> list:
    """Confusion matrix of the split."""
    from rnnforge import plots

    return [plots.confusion_matrix(y, predictions.argmax(axis=1), data.info["class_names"],
                                   out_dir / "confusion_matrix.png")]


SPEC = TaskSpec(
    name="sketch",
    summary="QuickDraw-style drawing classifier: Conv1D + stacked LSTM/GRU over stroke-3 sequences",
    kind="classification",
    datasets={"synthetic": load_synthetic},
    defaults={
        "max_len": strokes.MAX_LEN,
        "epochs": 20,
        "batch_size": 64,
        "learning_rate": 2e-3,
        "lr_schedule": "cosine",
        "clipnorm": 1.0,
        "dropout": 0.1,
        "rnn": "lstm",
        "units": 128,
        "patience": 5,
    },
    build_model=build_model,
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
    onnx=OnnxSpec(
        inputs=(TensorSpec("strokes", "float32", ("batch", "time", 3),
                           "stroke-3 rows (dx, dy in canvas pixels, pen_lifted 0/1), left-padded with zero rows"),),
        outputs=(TensorSpec("probabilities", "float32", ("batch", None), "softmax over class_names"),),
    ),
    score=score,
    report_plots=report_plots,
)
