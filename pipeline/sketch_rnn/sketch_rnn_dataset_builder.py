"""TFDS builder for QuickDraw strokes, modelled on TFDS's ``quickdraw_bitmap`` builder.

Configs choose the categories: ``small`` (10 categories), ``large`` (all 345 QuickDraw
categories, the names TFDS's ``quickdraw_bitmap`` uses), ``shared_sample`` (the three stroke
files of ``../shared/data/sketchrnn``), or a ``SketchRnnConfig(name=..., categories=[...])`` of
your own. ``_split_generators`` reads the manual dir when it holds files of a public format;
otherwise it downloads ``https://storage.googleapis.com/quickdraw_dataset/sketchrnn/<category>.npz``
through the TFDS download manager (progress, resumable; sizes and SHA-256 are recorded in the
dataset info, and checked against ``checksums.tsv`` beside this file once registered with
``tfds build --register_checksums``). Generation reads one category file at a time, so the
full 345-category set prepares in bounded memory; training then streams the prepared shards
(``stream_split``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from rnnforge.core.console import captured_stderr
from rnnforge.core.errors import UserError
from rnnforge.pipeline import quickdraw

NPZ_URL = "https://storage.googleapis.com/quickdraw_dataset/sketchrnn/{}.npz"
SMALL_CATEGORIES = ("apple", "bicycle", "cat", "clock", "envelope", "fish", "house", "star", "sun", "umbrella")
#: The 345 QuickDraw categories, as listed by TFDS's own quickdraw_bitmap dataset.
LARGE_CATEGORIES = tuple(
    line.strip()
    for line in tfds.core.tfds_path("datasets/quickdraw_bitmap/labels.txt").read_text().splitlines()
    if line.strip()
)


class SketchRnnConfig(tfds.core.BuilderConfig):
    """A set of QuickDraw categories (the class labels, in this order) and how to read them."""

    def __init__(self, *, categories, max_per_class: int | None = None, skip_bad_records: bool = False, **kwargs):
        kwargs.setdefault("version", tfds.core.Version("1.0.0"))
        super().__init__(**kwargs)
        if len(categories) < 2:
            raise ValueError(
                f"SketchRnnConfig {kwargs.get('name')!r} needs at least 2 categories, got {len(categories)}"
            )
        self.categories = tuple(categories)
        self.max_per_class = max_per_class
        self.skip_bad_records = skip_bad_records


class Builder(tfds.core.GeneratorBasedBuilder):
    """QuickDraw drawings as stroke-3 sequences ``(dx, dy, pen_lifted)``, float32 ``[n, 3]``."""

    name = "sketch_rnn"
    # TFDS finds a builder's folder from its module name (rnnforge/pipeline/sketch_rnn), but in a
    # source checkout the folder is pipeline/ at the top level (rnnforge/__init__.py): say where.
    pkg_dir_path = Path(__file__).resolve().parent
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Sketch-RNN .npz, simplified ndjson and tutorial TFRecords."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional. Put <category>.npz (Sketch-RNN), <category>.ndjson (simplified) or the tutorial "
        "TFRecords (training.tfrecord-*, eval.tfrecord-*, *.classes) in the manual dir to build offline."
    )
    BUILDER_CONFIGS = [
        SketchRnnConfig(name="small", description="10 QuickDraw categories", categories=SMALL_CATEGORIES),
        SketchRnnConfig(name="large", description="all 345 QuickDraw categories", categories=LARGE_CATEGORIES),
        SketchRnnConfig(
            name="shared_sample",
            description="Sketch-RNN sample files (sheep, omniglot, kanji)",
            categories=("aaron_sheep", "omniglot", "short_kanji"),
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "strokes": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=list(self.builder_config.categories)),
                }
            ),
            supervised_keys=("strokes", "label"),
            homepage="https://github.com/googlecreativelab/quickdraw-dataset",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        manual = _manual_dir(dl_manager)
        if manual is None:
            urls = {c: NPZ_URL.format(c.replace(" ", "%20")) for c in config.categories}
            paths = dl_manager.download(urls)
            # Our own checked downloads, one folder of <category>.npz links: read like a manual dir.
            manual = Path(dl_manager.download_dir) / f"sketch_rnn_{config.name}"
            manual.mkdir(parents=True, exist_ok=True)
            for category, path in paths.items():
                link = manual / f"{category}.npz"
                if not link.exists():
                    link.symlink_to(Path(path).resolve())
        quickdraw.category_sources(manual, list(config.categories))  # absent categories fail here
        self.info.metadata["source"] = str(manual)
        self.info.metadata["skipped_records"] = {}
        return {split: self._generate_examples(manual, split) for split in quickdraw.SPLITS}

    def _generate_examples(self, source: Path, split: str):
        config = self.builder_config
        skipped: dict[str, int] = {}
        for drawing_split, key, drawing, label in quickdraw.iter_drawings(
            source, list(config.categories), config.skip_bad_records, config.max_per_class, skipped
        ):
            if drawing_split == split:
                yield key, {"strokes": np.asarray(drawing, np.float32), "label": int(label)}
        self.info.metadata["skipped_records"].update(skipped)


def _manual_dir(dl_manager) -> Path | None:
    try:
        manual = Path(dl_manager.manual_dir)
    except (AssertionError, ValueError, TypeError):  # no manual dir configured
        return None
    return manual if manual.is_dir() and any(manual.iterdir()) else None


def prepare(
    categories: Sequence[str] | None,
    data_dir: str | None = None,
    tfds_dir: str | None = None,
    max_per_class: int | None = None,
    skip_bad_records: bool = False,
):
    """Build ``sketch_rnn`` once (from ``data_dir``, else by download) and return the prepared builder.

    The config's name is a hash of everything that changes the records (categories, the source
    files' names, sizes and times, the cap and skipping), so a changed folder is rebuilt and an
    unchanged one is reused from ``tfds_dir`` (default: TFDS's own, ``~/tensorflow_datasets``).
    """
    if data_dir:
        names, _ = quickdraw.category_sources(Path(data_dir), categories)
        listing = sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in Path(data_dir).iterdir() if p.is_file()
        )
    else:
        names, listing = list(categories or SMALL_CATEGORIES), "download"
    unknown = [c for c in names if c not in LARGE_CATEGORIES] if not data_dir else []
    if unknown:
        raise UserError(f"--categories: {unknown[0]!r} is not a QuickDraw category (see README for the 345 names)")
    key = json.dumps([names, str(data_dir), listing, max_per_class, skip_bad_records])
    config = SketchRnnConfig(
        name="rnnforge_" + hashlib.sha256(key.encode()).hexdigest()[:12],
        categories=names,
        max_per_class=max_per_class,
        skip_bad_records=skip_bad_records,
        description=f"{len(names)} categories from {data_dir or 'the Sketch-RNN download'}",
    )
    # A build from local files takes seconds, and what it prints is nobody's business (TFDS's
    # progress bars and absl warnings, its helper processes' TensorFlow start-up lines): kept off
    # the console unless --verbose, shown if it fails. A download keeps TFDS's progress bars.
    with captured_stderr() if data_dir else contextlib.nullcontext():
        builder = tfds.builder("sketch_rnn", config=config, data_dir=tfds_dir)
        download_config = tfds.download.DownloadConfig(manual_dir=data_dir) if data_dir else None
        builder.download_and_prepare(download_config=download_config)
    return builder


def read_split(builder, split: str, limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """One prepared split in memory: stroke-3 drawings and labels (the first ``limit`` if given).
    The driver's first read starts TensorFlow's devices, whose CUDA probe prints its failure on a
    machine without a GPU: off the console unless --verbose, as at TensorFlow's import."""
    items, labels = [], []
    with captured_stderr():
        ds = builder.as_dataset(split=split, as_supervised=True)
        if limit:
            ds = ds.take(limit)
        for strokes, label in tfds.as_numpy(ds):
            items.append(strokes)
            labels.append(label)
    return items, np.asarray(labels, np.int64)


def stream_split(builder, split: str, *, input_context=None, shuffle: bool = True, seed: int = 0):
    """The prepared ``split`` as an endless ``(strokes, label)`` dataset for one input pipeline.

    With as many shard files as pipelines, each pipeline reads its own files (TFDS
    ``ReadConfig(input_context=...)``); otherwise every pipeline reads all files and keeps every
    N-th drawing. Files are interleaved and decoded in parallel; small splits are cached in memory
    by TFDS (``try_autocache``).
    """
    import tensorflow as tf

    pipelines = input_context.num_input_pipelines if input_context else 1
    by_files = pipelines > 1 and builder.info.splits[split].num_shards >= pipelines
    read_config = tfds.ReadConfig(
        shuffle_seed=seed,
        input_context=input_context if by_files else None,
        num_parallel_calls_for_decode=tf.data.AUTOTUNE,
        num_parallel_calls_for_interleave_files=tf.data.AUTOTUNE,
    )
    ds = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config, as_supervised=True)
    if pipelines > 1 and not by_files:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    return ds
