"""tf.data input pipelines shared by every task: per-worker shards for training, plain batches
for evaluation.

Each Ray worker builds its own pipeline through ``strategy.distribute_datasets_from_function``:
the pipeline keeps only the examples of its own shard (``shard(num_input_pipelines,
input_pipeline_id)`` before shuffling), so the workers see disjoint parts of every epoch, and
batches to the per-worker batch size. The global batch is per-worker batch x workers.
"""

from __future__ import annotations

import numpy as np


def worker_dataset(
    x: np.ndarray | dict,
    y: np.ndarray,
    *,
    batch_size: int,
    num_shards: int,
    shard_index: int,
    seed: int,
    shuffle: bool = True,
    augment=None,
):
    """Endless ``tf.data.Dataset`` of ``(x, y)`` batches from this worker's shard.

    x: ``[n, ...]`` features, or a dict of them keyed by model input name; y: ``[n, ...]``
    targets (numpy). Examples ``shard_index``,
    ``shard_index + num_shards``, ... belong to this shard; they are reshuffled every epoch
    with a seed shared by nothing else, passed through ``augment(x, y) -> (x, y)`` if given,
    batched to ``batch_size`` and prefetched.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(num_shards, shard_index)
    if shuffle:
        shard_len = (len(y) - shard_index + num_shards - 1) // num_shards
        ds = ds.shuffle(shard_len, seed=seed + shard_index, reshuffle_each_iteration=True)
    ds = ds.repeat()
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # The shard is explicit above; the strategy must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.experimental_deterministic = not shuffle
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def validation_batches(x, y, global_batch: int):
    """One pass over every validation example in global batches (the last one partial), which
    Keras shards among the workers itself (by batch) and starts again each epoch: early stopping
    and the best weights compare epochs on the same, whole validation split."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).with_options(options)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Steps that let every worker see (almost) its whole shard once; at least 1."""
    return max(1, num_examples // global_batch)


def bucket_lengths(max_len: int, buckets: int = 4) -> tuple[int, ...]:
    """Padded lengths of the length buckets: ``buckets`` even steps up to ``max_len``."""
    return tuple(sorted({max(1, round(max_len * (i + 1) / buckets)) for i in range(buckets)}))


def bucketed_batches(ds, *, batch_size: int, max_len: int, shuffle_buffer: int = 0, seed: int = 0, buckets: int = 4):
    """Endless batches of ``(sequences, labels)`` grouped by length, from ``(sequence, label)`` examples.

    Sequences ``[n, features]`` are cropped to ``max_len`` and left-padded with zero rows to the
    smallest bucket length that holds them (as ``strokes.pad_or_crop`` pads to ``max_len``), so
    a batch of short drawings costs the recurrent layers a fraction of a ``max_len`` batch.
    Every batch holds ``batch_size`` examples of one bucket; the time axis varies between batches.
    """
    import tensorflow as tf

    lengths = tf.constant(bucket_lengths(max_len, buckets), tf.int32)

    def crop_and_pad(sequence, label):
        sequence = tf.cast(sequence[:max_len], tf.float32)
        n = tf.shape(sequence)[0]
        bucket = tf.minimum(tf.searchsorted(lengths, [n], side="left")[0], len(lengths) - 1)
        padded = tf.pad(sequence, [[lengths[bucket] - n, 0], [0, 0]])
        return tf.cast(bucket, tf.int64), padded, label

    ds = ds.repeat()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(crop_and_pad, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.group_by_window(
        key_func=lambda bucket, sequence, label: bucket,
        reduce_func=lambda bucket, window: window.batch(batch_size, drop_remainder=True),
        window_size=batch_size,
    )
    ds = ds.map(lambda bucket, sequences, labels: (sequences, labels), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
