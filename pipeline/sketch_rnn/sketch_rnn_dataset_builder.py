"""TFDS builder for QuickDraw strokes, modelled on TFDS's ``quickdraw_bitmap`` builder.

Configs choose the categories: ``small`` (10 categories), ``shared_sample`` (the three stroke
files of ``../shared/data/sketchrnn``), or a ``SketchRnnConfig(name=..., categories=[...])`` of
your own (any of the 345 QuickDraw categories). ``_split_generators`` reads the manual dir when
it holds files of a public format; otherwise it downloads
``https://storage.googleapis.com/quickdraw_dataset/sketchrnn/<category>.npz`` through the TFDS
download manager (progress, resumable, checksums recorded once with ``--register_checksums``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pipeline import quickdraw

NPZ_URL = "https://storage.googleapis.com/quickdraw_dataset/sketchrnn/{}.npz"
SMALL_CATEGORIES = ("apple", "bicycle", "cat", "clock", "envelope", "fish", "house", "star", "sun", "umbrella")


class SketchRnnConfig(tfds.core.BuilderConfig):
    """A set of QuickDraw categories (the class labels, in this order)."""

    def __init__(self, *, categories, **kwargs):
        kwargs.setdefault("version", tfds.core.Version("1.0.0"))
        super().__init__(**kwargs)
        if len(categories) < 2:
            raise ValueError(f"SketchRnnConfig {kwargs.get('name')!r} needs at least 2 categories, got {len(categories)}")
        self.categories = tuple(categories)


class Builder(tfds.core.GeneratorBasedBuilder):
    """QuickDraw drawings as int16-valued stroke-3 sequences ``(dx, dy, pen_lifted)``."""

    name = "sketch_rnn"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Sketch-RNN .npz, simplified ndjson and tutorial TFRecords."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional. Put <category>.npz (Sketch-RNN), <category>.ndjson (simplified) or the tutorial "
        "TFRecords (training.tfrecord-*, eval.tfrecord-*, *.classes) in the manual dir to build offline."
    )
    BUILDER_CONFIGS = [
        SketchRnnConfig(name="small", description="10 QuickDraw categories", categories=SMALL_CATEGORIES),
        SketchRnnConfig(name="shared_sample", description="Sketch-RNN sample files (sheep, omniglot, kanji)",
                        categories=("aaron_sheep", "omniglot", "short_kanji")),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "strokes": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=list(self.builder_config.categories)),
            }),
            supervised_keys=("strokes", "label"),
            homepage="https://github.com/googlecreativelab/quickdraw-dataset",
        )

    def _split_generators(self, dl_manager):
        categories = list(self.builder_config.categories)
        manual = _manual_dir(dl_manager)
        if manual is not None:
            drawings = quickdraw.load_local(manual, categories)
        else:
            paths = dl_manager.download({c: NPZ_URL.format(c.replace(" ", "%20")) for c in categories})
            per_class = {c: quickdraw.read_npz(Path(paths[c])) for c in categories}  # our own checked download
            drawings = quickdraw._combine("sketchrnn", per_class)
        return {split: self._generate_examples(*drawings.splits[split], split) for split in quickdraw.SPLITS}

    def _generate_examples(self, items, labels, split):
        for i, (drawing, label) in enumerate(zip(items, labels)):
            yield f"{split}_{i}", {"strokes": np.asarray(drawing, np.float32), "label": int(label)}


def _manual_dir(dl_manager) -> Path | None:
    try:
        manual = Path(dl_manager.manual_dir)
    except (AssertionError, ValueError, TypeError):  # no manual dir configured
        return None
    return manual if manual.is_dir() and any(manual.iterdir()) else None


def load_with_tfds(categories: list[str] | None, max_per_class: int | None = None) -> quickdraw.Drawings:
    """Build (download) ``sketch_rnn`` for ``categories`` (default: the ``small`` set) and read it."""
    config = SketchRnnConfig(name="custom_" + "_".join(c.replace(" ", "-") for c in categories), categories=categories) \
        if categories else "small"
    builder = tfds.builder("sketch_rnn", config=config)
    builder.download_and_prepare()
    splits = {}
    for split in quickdraw.SPLITS:
        items, labels = [], []
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            items.append(example["strokes"])
            labels.append(example["label"])
        splits[split] = (items, np.asarray(labels, np.int64))
    drawings = quickdraw.Drawings("sketchrnn", builder.info.features["label"].names, splits)
    return quickdraw._cap(drawings, max_per_class) if max_per_class else drawings
