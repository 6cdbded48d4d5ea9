"""tf.data input pipelines shared by every task: per-worker shards for training, plain batches
for evaluation.

Each Ray worker builds its own pipeline through ``strategy.distribute_datasets_from_function``:
the pipeline keeps only the examples of its own shard (``shard(num_input_pipelines,
input_pipeline_id)`` before shuffling), so the workers see disjoint parts of every epoch, and
batches to the per-worker batch size. The global batch is per-worker batch x workers.
"""

from __future__ import annotations

import numpy as np


def worker_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, num_shards: int, shard_index: int,
                   seed: int, shuffle: bool = True):
    """Endless ``tf.data.Dataset`` of ``(x, y)`` batches from this worker's shard.

    x: ``[n, ...]`` features, y: ``[n, ...]`` targets (numpy). Examples ``shard_index``,
    ``shard_index + num_shards``, ... belong to this shard; they are reshuffled every epoch
    with a seed shared by nothing else, batched to ``batch_size`` and prefetched.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(num_shards, shard_index)
    if shuffle:
        shard_len = (len(x) - shard_index + num_shards - 1) // num_shards
        ds = ds.shuffle(shard_len, seed=seed + shard_index, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # The shard is explicit above; the strategy must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.experimental_deterministic = not shuffle
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Steps that let every worker see (almost) its whole shard once; at least 1."""
    return max(1, num_examples // global_batch)
