"""Video task: classify short clips with a per-frame CNN and an RNN over time (CNN-LSTM).

Model: uint8 frames ``[batch, T, H, W, 3]`` -> rescaling inside the model -> per-frame conv
blocks (TimeDistributed) -> average pooling to a coarse grid (a global pool would erase where
things are, and the synthetic classes include the direction of motion) -> dense -> LSTM/GRU ->
softmax. ConvLSTM2D is not offered: tf2onnx exports it as a ``Loop`` (onnx/tensorflow-onnx
#1222, #1678, #1760), which export refuses. Train it with ``rnnforge train video``.
"""

from __future__ import annotations

from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.models.common import classification_scores, confusion_plot
from rnnforge.models.spec import Int8Spec, OnnxSpec, TaskData, TaskSpec, TensorSpec
from rnnforge.pipeline import video

CONV_FILTERS = (16, 32, 48)
POOL_GRID = 4  # frames are pooled to POOL_GRID x POOL_GRID cells before the RNN


def _task_data(splits: dict, class_names: list[str], config: TrainConfig, source: str) -> TaskData:
    if not len(splits["train"][0]):
        raise UserError("the video dataset has no training clips")
    info = {
        "class_names": list(class_names),
        "frames": config.frames,
        "frame_size": config.frame_size,
        "source": source,
    }
    return TaskData(splits=splits, info=info)


def load_synthetic(config: TrainConfig) -> TaskData:
    """Embedded moving-shapes clips (``pipeline.video.synthetic``)."""
    splits = {
        s: video.synthetic(s, seed=config.data_seed, frames=config.frames, size=config.frame_size) for s in video.SPLITS
    }
    return _task_data(splits, video.CLASS_NAMES, config, "synthetic")


def load_folder(config: TrainConfig) -> TaskData:
    """Your own clips: ``--data-dir ROOT`` with ``ROOT/<class>/<clip>`` or ``ROOT/{train,test}/<class>/<clip>``."""
    if not config.data_dir:
        raise UserError("--dataset folder needs --data-dir ROOT (ROOT/<class>/<clip> folders)")
    splits, names = video.load_folder(
        config.data_dir, config.frames, config.frame_size, config.sampling, config.data_seed
    )
    return _task_data(splits, names, config, "folder")


def load_ucf101(config: TrainConfig) -> TaskData:
    """UCF101 through TFDS (``--ucf101-config``, ``--categories`` for a subset)."""
    splits, names = video.load_ucf101(
        config.ucf101_config,
        config.frames,
        config.frame_size,
        config.categories,
        config.sampling,
        config.data_seed,
        config.data_dir,
    )
    return _task_data(splits, names, config, "ucf101")


def build_model(config: TrainConfig, info: dict):
    """CNN-RNN classifier: uint8 ``[batch, T, H, W, 3]`` -> ``[batch, classes]``."""
    from tensorflow import keras

    from rnnforge.models.common import recurrent_layer

    frames, size = info["frames"], info["frame_size"]
    inputs = keras.Input(shape=(frames, size, size, 3), name="frames", dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    cnn = keras.Sequential(name="frame_cnn")
    cnn.add(keras.Input(shape=(size, size, 3)))
    for i, filters in enumerate(CONV_FILTERS):
        cnn.add(keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"conv{i}"))
    grid = max(1, size // 2 ** len(CONV_FILTERS) // POOL_GRID)
    cnn.add(keras.layers.AveragePooling2D(grid, name="pool"))
    cnn.add(keras.layers.Flatten(name="flatten"))
    cnn.add(keras.layers.Dense(96, activation="relu", name="frame_features"))
    x = keras.layers.TimeDistributed(cnn, name="per_frame")(x)
    x = recurrent_layer(config, config.units, return_sequences=False, name="rnn0")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(len(info["class_names"]), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="video_cnn_rnn")


SPEC = TaskSpec(
    name="video",
    summary="Clip classifier: per-frame CNN + LSTM/GRU over time",
    kind="classification",
    datasets={"synthetic": load_synthetic, "folder": load_folder, "ucf101": load_ucf101},
    defaults={
        "frames": 16,
        "frame_size": 64,
        "sampling": "uniform",
        "ucf101_config": "ucf101_1_256",
        "epochs": 16,
        "batch_size": 16,
        "dropout": 0.2,
        "rnn": "lstm",
        "units": 64,
        "patience": 4,
    },
    build_model=build_model,
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
    onnx=OnnxSpec(
        inputs=(
            TensorSpec(
                "frames",
                "uint8",
                ("batch", None, None, None, 3),
                "RGB frames, uint8 0-255, [T, H, W] as trained (see rnnforge.info)",
            ),
        ),
        outputs=(TensorSpec("probabilities", "float32", ("batch", None), "softmax over class_names"),),
        # The per-frame CNN is most of the arithmetic: QDQ convolutions (Relu and the pooling
        # quantized with them, so ORT runs QLinearConv end to end on uint8 frames); the LSTM and
        # the dense layers dynamically. See docs/performance.md, "int8 variants".
        int8=Int8Spec(static_ops=("Conv", "Relu", "AveragePool")),
    ),
    score=classification_scores,
    report_plots=confusion_plot,
)
