"""Sketch task: classify drawings given as stroke-3 sequences (dx, dy, pen_lifted).

Model: a Conv1D front end with BatchNorm (two strided blocks shorten the sequence 4x), two
stacked recurrent layers (LSTM or GRU), softmax over the classes - the architecture of Géron's
ch. 15 QuickDraw solution and TensorFlow's QuickDraw RNN tutorial. The model takes raw pixel
offsets; their scaling (Sketch-RNN's delta standard deviation) lives inside it, so the ONNX
model needs no pre-processing. Train it with ``rnnforge train sketch``.
"""

from __future__ import annotations


from rnnforge.errors import UserError
from models.common import classification_scores, confusion_plot
from models.spec import OnnxSpec, TaskData, TaskSpec, TensorSpec
from pipeline import strokes

CONV_FILTERS = (48, 64, 96)
CONV_STRIDES = (1, 2, 2)
KERNEL_SIZE = 5


def load_synthetic(config: dict) -> TaskData:
    """The embedded procedurally drawn dataset (``pipeline.sketch_synthetic``)."""
    from pipeline import sketch_synthetic

    splits = {split: sketch_synthetic.generate(split, seed=config["data_seed"]) for split in ("train", "valid", "test")}
    return _task_data(splits, list(sketch_synthetic.CLASS_NAMES), config, {"format": "synthetic"})


def load_quickdraw(config: dict) -> TaskData:
    """Real QuickDraw strokes: local files of any public format (``--data-dir``), or the
    ``sketch_rnn`` TFDS builder, which downloads the Sketch-RNN ``.npz`` files."""
    from pipeline import quickdraw

    categories = [c.strip() for c in config["categories"].split(",") if c.strip()] if config["categories"] else None
    if config.get("data_dir"):
        drawings = quickdraw.load_local(config["data_dir"], categories, config["skip_bad_records"],
                                        config["max_per_class"])
    else:
        from pipeline.sketch_rnn import load_with_tfds

        drawings = load_with_tfds(categories, config["max_per_class"])
    info = {"format": drawings.format, "skipped_records": drawings.skipped}
    return _task_data({s: (d, labels) for s, (d, labels) in drawings.splits.items()}, drawings.class_names, config, info)


def _task_data(splits: dict, class_names: list[str], config: dict, extra_info: dict) -> TaskData:
    """Pad/crop stroke-3 drawings to ``max_len`` and describe them for the model and reports."""
    max_len = config["max_len"]
    if not splits["train"][0]:
        raise UserError("the dataset has no training drawings")
    info = {
        "class_names": class_names,
        "delta_scale": strokes.delta_scale(splits["train"][0]),
        "max_len": max_len,
        **extra_info,
    }
    return TaskData(splits={s: (strokes.pad_or_crop(d, max_len), labels) for s, (d, labels) in splits.items()}, info=info)



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


SPEC = TaskSpec(
    name="sketch",
    summary="QuickDraw-style drawing classifier: Conv1D + stacked LSTM/GRU over stroke-3 sequences",
    kind="classification",
    datasets={"synthetic": load_synthetic, "quickdraw": load_quickdraw},
    defaults={
        "max_len": strokes.MAX_LEN,
        "categories": None,  # quickdraw: comma-separated subset (default: every category found)
        "skip_bad_records": False,
        "max_per_class": None,
        "epochs": 15,
        "batch_size": 64,
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
    score=classification_scores,
    report_plots=confusion_plot,
    demo_options={"epochs": 12},
)
