"""The ``sketch_rnn`` TFDS dataset: QuickDraw strokes (stroke-3), registered on import.

    import rnnforge.pipeline.sketch_rnn  # registers sketch_rnn
    ds = tfds.load("sketch_rnn/small", split="train")  # downloads the Sketch-RNN .npz files

Offline, put the files of any public format (``<category>.npz``, ``<category>.ndjson`` or the
tutorial TFRecords) in a folder and pass it as the manual dir::

    tfds.load("sketch_rnn/small", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir=FOLDER)})
"""

from rnnforge.pipeline.sketch_rnn.sketch_rnn_dataset_builder import (
    LARGE_CATEGORIES,
    Builder,
    SketchRnnConfig,
    prepare,
    read_split,
    stream_split,
)

__all__ = ["LARGE_CATEGORIES", "Builder", "SketchRnnConfig", "prepare", "read_split", "stream_split"]
