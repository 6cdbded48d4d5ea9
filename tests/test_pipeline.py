"""Per-worker input pipelines: each worker reads a disjoint shard of every epoch."""

from __future__ import annotations

import numpy as np

from rnnforge.pipeline.input import steps_per_epoch, validation_batches, worker_dataset


def test_two_workers_read_disjoint_shards_covering_the_epoch():
    n, batch, workers = 1000, 16, 2
    ids = np.arange(n, dtype=np.int64)
    x = np.stack([ids, ids], axis=1).astype(np.float32)
    steps = steps_per_epoch(n, batch * workers)
    seen = []
    for shard in range(workers):
        ds = worker_dataset(x, ids, batch_size=batch, num_shards=workers, shard_index=shard, seed=7)
        got = np.concatenate([y.numpy() for _, y in ds.take(steps)])
        assert len(got) == steps * batch and len(set(got)) == len(got)
        assert (got % workers == shard).all()
        seen.append(set(got))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) >= n - batch * workers


def test_each_epoch_is_reshuffled():
    ids = np.arange(64, dtype=np.int64)
    ds = worker_dataset(ids[:, None].astype(np.float32), ids, batch_size=32, num_shards=1, shard_index=0, seed=1)
    first, second = [np.concatenate([y.numpy() for _, y in ds.skip(k).take(2)]) for k in (0, 2)]
    assert sorted(first) == sorted(second) == list(ids)
    assert list(first) != list(second)


def test_validation_batches_cover_every_example_once_each_epoch():
    """Early stopping compares epochs on the whole validation split: 89 forecast windows in global
    batches of 32 give 32 + 32 + 25, not the 64 that whole batches of an endless dataset gave."""
    ids = np.arange(89)
    valid = validation_batches(ids[:, None].astype(np.float32), ids, global_batch=32)
    for _ in range(2):  # Keras starts it again every epoch
        sizes, seen = [], []
        for _, y in valid:
            sizes.append(len(y))
            seen.extend(y.numpy().tolist())
        assert sizes == [32, 32, 25] and seen == ids.tolist()
