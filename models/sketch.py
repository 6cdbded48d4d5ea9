"""Sketch task: classify drawings given as stroke-3 sequences (dx, dy, pen_lifted).

Model: a Conv1D front end with BatchNorm (two strided blocks shorten the sequence 4x), two
stacked recurrent layers (LSTM or GRU), softmax over the classes - the architecture of Géron's
ch. 15 QuickDraw solution and TensorFlow's QuickDraw RNN tutorial. The model takes raw pixel
offsets; their scaling (Sketch-RNN's delta standard deviation) lives inside it, so the ONNX
model needs no pre-processing. Train it with ``rnnforge train sketch``.
"""

from __future__ import annotations

import numpy as np

from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.models.common import classification_scores, confusion_plot
from rnnforge.models.spec import Int8Spec, OnnxSpec, TaskData, TaskSpec, TensorSpec
from rnnforge.pipeline import strokes

CONV_FILTERS = (48, 64, 96)
CONV_STRIDES = (1, 2, 2)
KERNEL_SIZE = 5
SCALE_SAMPLE = 20_000  # streamed data: training drawings that set the offsets' scale
SHUFFLE_BUFFER = 10_000  # streamed data: per-worker shuffle buffer (TFDS also shuffles files)


def load_synthetic(config: TrainConfig) -> TaskData:
    """The embedded procedurally drawn dataset (``pipeline.sketch_synthetic``)."""
    from rnnforge.pipeline import sketch_synthetic

    splits = {split: sketch_synthetic.generate(split, seed=config.data_seed) for split in ("train", "valid", "test")}
    return _task_data(splits, list(sketch_synthetic.CLASS_NAMES), config, {"format": "synthetic"})


def load_quickdraw(config: TrainConfig) -> TaskData:
    """Real QuickDraw strokes: local files of any public format (``--data-dir``), or the
    ``sketch_rnn`` TFDS builder, which downloads the Sketch-RNN ``.npz`` files.

    Local files are read into memory unless ``--streaming``; a download always streams: the
    builder prepares TFRecord shards once (in ``--tfds-dir``) and each worker reads its own
    shards (``pipeline.input.bucketed_batches``; by length with ``--length-buckets``). Valid and test
    stay in memory.
    """
    from rnnforge.pipeline import quickdraw

    if config.data_dir and not config.streaming:
        drawings = quickdraw.load_local(
            config.data_dir, config.categories, config.skip_bad_records, config.max_per_class
        )
        info = {"format": drawings.format, "skipped_records": drawings.skipped, "streaming": False}
        return _task_data(drawings.splits, drawings.class_names, config, info)
    return _stream_quickdraw(config)


def _stream_quickdraw(config: TrainConfig) -> TaskData:
    from rnnforge.pipeline import sketch_rnn
    from rnnforge.pipeline.input import bucket_lengths, bucketed_batches

    builder = sketch_rnn.prepare(
        config.categories, config.data_dir, config.tfds_dir, config.max_per_class, config.skip_bad_records
    )
    max_len = config.max_len
    splits = {s: sketch_rnn.read_split(builder, s) for s in ("valid", "test")}
    sample, _ = sketch_rnn.read_split(builder, "train", limit=SCALE_SAMPLE)
    if not sample:
        raise UserError(f"the dataset {builder.info.full_name} has no training drawings")

    def train_stream(input_context, batch_size: int, seed: int):
        drawings = sketch_rnn.stream_split(builder, "train", input_context=input_context, seed=seed)
        return bucketed_batches(
            drawings,
            batch_size=batch_size,
            max_len=max_len,
            shuffle_buffer=SHUFFLE_BUFFER,
            seed=seed,
            buckets=config.length_buckets,
        )

    info = {
        "format": "tfds",
        "tfds_dataset": builder.info.full_name,
        "tfds_dir": str(builder.data_dir),
        "skipped_records": dict(builder.info.metadata.get("skipped_records", {})),
        "streaming": True,
        "bucket_lengths": list(bucket_lengths(max_len, config.length_buckets)),
    }
    data = _task_data(
        {"train": ([], np.zeros(0, np.int64)), **splits},
        builder.info.features["label"].names,
        config,
        info,
        scale_from=sample,
    )
    data.train_stream, data.train_size = train_stream, builder.info.splits["train"].num_examples
    return data


def _task_data(
    splits: dict, class_names: list[str], config: TrainConfig, extra_info: dict, scale_from: list | None = None
) -> TaskData:
    """Pad/crop stroke-3 drawings to ``max_len`` and describe them for the model and reports.

    The offsets' scale comes from the training drawings (or ``scale_from``, a sample of them).
    """
    max_len = config.max_len
    scale_from = scale_from if scale_from is not None else splits["train"][0]
    if not len(scale_from):
        raise UserError("the dataset has no training drawings")
    info = {
        "class_names": list(class_names),
        "delta_scale": strokes.delta_scale(scale_from),
        "max_len": max_len,
        **extra_info,
    }
    return TaskData(
        splits={s: (strokes.pad_or_crop(d, max_len), labels) for s, (d, labels) in splits.items()}, info=info
    )


def build_model(config: TrainConfig, info: dict):
    """Conv1D + stacked RNN classifier: float32 ``[batch, time, 3]`` -> ``[batch, classes]``."""
    from tensorflow import keras

    from rnnforge.models.common import recurrent_layer

    scale = info["delta_scale"]
    inputs = keras.Input(shape=(None, 3), name="strokes", dtype="float32")
    # (dx, dy) / scale, pen_lifted unchanged: a fixed Normalization exports as Sub/Div.
    x = keras.layers.Normalization(mean=[0.0, 0.0, 0.0], variance=[scale**2, scale**2, 1.0], name="scale")(inputs)
    for i, (filters, stride) in enumerate(zip(CONV_FILTERS, CONV_STRIDES)):
        x = keras.layers.Conv1D(filters, KERNEL_SIZE, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(
            x
        )
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = recurrent_layer(config, config.units, return_sequences=True, name="rnn0")(x)
    x = recurrent_layer(config, config.units, return_sequences=False, name="rnn1")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(len(info["class_names"]), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="sketch_classifier")


SPEC = TaskSpec(
    name="sketch",
    summary="QuickDraw-style drawing classifier: Conv1D + stacked LSTM/GRU over stroke-3 sequences",
    kind="classification",
    datasets={"synthetic": load_synthetic, "quickdraw": load_quickdraw},
    defaults={
        "max_len": strokes.MAX_LEN,
        "length_buckets": 1,  # quickdraw, streaming: 1 pads every drawing to max_len
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
        inputs=(
            TensorSpec(
                "strokes",
                "float32",
                ("batch", "time", 3),
                "stroke-3 rows (dx, dy in canvas pixels, pen_lifted 0/1), left-padded with zero rows",
            ),
        ),
        outputs=(TensorSpec("probabilities", "float32", ("batch", None), "softmax over class_names"),),
        # int8: the LSTMs and the dense layer dynamically; a QDQ Conv1D front end lost top-1
        # agreement below the gate's. See docs/performance.md, "int8 variants".
        int8=Int8Spec(dynamic_ops=("LSTM", "GRU", "MatMul", "Gemm")),
    ),
    score=classification_scores,
    report_plots=confusion_plot,
    demo_options={"epochs": 12},
)
