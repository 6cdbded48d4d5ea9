"""Video task: classify short clips with a per-frame CNN and an RNN over time (CNN-LSTM).

Model: uint8 frames ``[batch, T, H, W, 3]`` -> rescaling inside the model -> per-frame conv
blocks (TimeDistributed) -> average pooling to a coarse grid (a global pool would erase where
things are, and the synthetic classes include the direction of motion) -> dense -> LSTM/GRU ->
softmax. ConvLSTM2D is not offered: tf2onnx exports it as a ``Loop`` (onnx/tensorflow-onnx
#1222, #1678, #1760), which export refuses. Train it with ``rnnforge train video``.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnforge.core.config import TrainConfig
from rnnforge.core.errors import UserError
from rnnforge.models.common import classification_scores, confusion_plot
from rnnforge.models.spec import Int8Spec, OnnxSpec, TaskData, TaskSpec, TensorSpec
from rnnforge.pipeline import video

CONV_FILTERS = (16, 32, 64)
POOL_GRID = 4  # frames are pooled to POOL_GRID x POOL_GRID cells before the RNN (None: no pooling)
POOLING = "average"  # or "max"
BATCH_NORM = True  # BatchNorm after each convolution
FRAME_FEATURES = 128  # the dense layer between the per-frame CNN and the RNN
#: ``--augment``'s default per dataset ("synthetic" per ``--difficulty``), as measured in docs/video.md.
AUGMENT_BY_DEFAULT = {"synthetic/easy": False, "synthetic/hard": True, "folder": True, "ucf101": True}


def _task_data(
    splits: dict, class_names: list[str], config: TrainConfig, source: str, flips: tuple[int, ...] | None = None
) -> TaskData:
    """The clips as ``TaskData``; with augmentation on (``--augment``, else the dataset's default), the
    training split streams through ``pipeline.video.clip_augmenter`` (``flips``: how mirrors relabel)."""
    if not len(splits["train"][0]):
        raise UserError("the video dataset has no training clips")
    key = f"{source}/{config.difficulty or 'easy'}" if source == "synthetic" else source  # (runs before it: easy)
    augment = AUGMENT_BY_DEFAULT[key] if config.augment is None else config.augment
    info = {
        "class_names": list(class_names),
        "frames": config.frames,
        "frame_size": config.frame_size,
        "source": source,
        "augment": augment,
        "mirrors": "relabelled" if flips is not None and augment else "off",
    }
    data = TaskData(splits=splits, info=info)
    if augment:
        data.train_stream = functools.partial(_augmented_batches, splits["train"], video.clip_augmenter(flips))
        data.train_size = len(splits["train"][0])
    return data


def _augmented_batches(train: tuple, augment, input_context, batch_size: int, seed: int):
    """One worker's endless batches of augmented training clips (``TaskData.train_stream``)."""
    from rnnforge.pipeline.input import worker_dataset

    x, y = train
    return worker_dataset(
        x,
        y,
        batch_size=batch_size,
        num_shards=input_context.num_input_pipelines,
        shard_index=input_context.input_pipeline_id,
        seed=seed,
        augment=augment,
    )


def load_synthetic(config: TrainConfig) -> TaskData:
    """Embedded clips (``pipeline.video.synthetic``): moving shapes, or characters with ``--difficulty hard``."""
    difficulty = config.difficulty or "easy"  # a run dir from before --difficulty
    splits = {
        s: video.synthetic(
            s, seed=config.data_seed, frames=config.frames, size=config.frame_size, difficulty=difficulty
        )
        for s in video.SPLITS
    }
    names = video.HARD_CLASS_NAMES if difficulty == "hard" else video.CLASS_NAMES
    data = _task_data(splits, names, config, "synthetic", flips=video.flip_classes(difficulty))
    data.draw_held_out = functools.partial(_draw_test_clips, config, difficulty)
    return data


#: Seeds of ``draw_held_out``'s batches: ``data_seed + DRAW_SEED_STEP * (index + 1)``, far from the
#: splits' own (data_seed plus 0, 7,919 and 15,887), so a drawn clip is never a training clip.
DRAW_SEED_STEP = 104_729


def _draw_test_clips(config: TrainConfig, difficulty: str, n: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh clips of the test split's kind (the hard set: a fresh cast in the test wardrobe)."""
    seed = config.data_seed + DRAW_SEED_STEP * (index + 1)
    return video.synthetic("test", seed=seed, frames=config.frames, size=config.frame_size, n=n, difficulty=difficulty)


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


def build_model(
    config: TrainConfig,
    info: dict,
    *,
    filters: tuple[int, ...] = CONV_FILTERS,
    pool_grid: int | None = POOL_GRID,
    pooling: str = POOLING,
    batch_norm: bool = BATCH_NORM,
    features: int = FRAME_FEATURES,
):
    """CNN-RNN classifier: uint8 ``[batch, T, H, W, 3]`` -> ``[batch, classes]``. The keywords
    (the per-frame CNN's widths, pooling grid, BatchNorm, feature width) default to the module's
    constants; ``benchmarks/experiments/video_defaults.py`` compares other values."""
    from tensorflow import keras

    from rnnforge.models.common import recurrent_layer

    frames, size = info["frames"], info["frame_size"]
    inputs = keras.Input(shape=(frames, size, size, 3), name="frames", dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    cnn = keras.Sequential(name="frame_cnn")
    cnn.add(keras.Input(shape=(size, size, 3)))
    for i, width in enumerate(filters):
        cnn.add(keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=not batch_norm, name=f"conv{i}"))
        if batch_norm:
            cnn.add(keras.layers.BatchNormalization(name=f"norm{i}"))
        cnn.add(keras.layers.ReLU(name=f"relu{i}"))
    if pool_grid:
        pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
        cnn.add(pool(max(1, size // 2 ** len(filters) // pool_grid), name="pool"))
    cnn.add(keras.layers.Flatten(name="flatten"))
    cnn.add(keras.layers.Dense(features, activation="relu", name="frame_features"))
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
        "difficulty": "easy",
        "ucf101_config": "ucf101_1_256",
        "epochs": 40,
        "batch_size": 16,
        "dropout": 0.2,
        "rnn": "lstm",
        "units": 64,
        "patience": 6,
        "patience_start": 10,
    },
    demo_options={"epochs": 16},  # the moving shapes (easy) learn within 16 epochs
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
        # quantized with them, so ORT runs QLinearConv end to end on uint8 frames). The LSTM and
        # the dense layers stay fp32: quantized dynamically they changed most of the decisions
        # int8 changed on the hard set (agreement 0.9875 -> 0.9935 of 3,838 clips, established)
        # for no time (int8 / fp32 0.74 -> 0.73 at batch 256). See docs/performance.md, "int8
        # gates judged on evidence".
        int8=Int8Spec(static_ops=("Conv", "Relu", "AveragePool"), dynamic_ops=()),
    ),
    score=classification_scores,
    report_plots=confusion_plot,
)
