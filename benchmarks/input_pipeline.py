"""Is the training input pipeline ever the bottleneck? tf.data alone vs the model's appetite.

For each task: the samples/s one worker's tf.data pipeline delivers when nothing consumes
them (``cluster.fit.training_batches``, the first Ray worker's shard, shuffle, batch and
prefetch, or the streamed QuickDraw pipeline with ``--quickdraw DIR``), against the
samples/s the same worker's model trains at (``model.fit`` on cached in-memory batches, so only
compute counts). Headroom = pipeline / training; the goal is at least 3x.

    .venv/bin/python benchmarks/input_pipeline.py [--tasks sketch,forecast,video] [--workers 2]
        [--quickdraw ../shared/data/sketchrnn] [--output docs/input_pipeline.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnforge  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)


def pipeline_rate(dataset, batch_size: int, steps: int) -> float:
    """Samples/s drawn from ``dataset`` (after a warm-up batch) with no consumer."""
    iterator = iter(dataset)
    next(iterator)
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - started)


def training_rate(model, dataset, batch_size: int, steps: int) -> float:
    """Samples/s ``model.fit`` trains at on ``steps`` batches of ``dataset`` cached in memory
    (one warm-up epoch first), so only the model's own work counts."""
    cached = dataset.take(steps).cache()
    model.fit(cached, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(cached, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - started)


def measure(task: str, workers: int, steps: int, quickdraw: str | None) -> dict:
    import tensorflow as tf

    from rnnforge.cluster.fit import prepare, training_batches
    from rnnforge.models.resolve import resolve_config

    options = {"workers": workers}
    if task == "sketch" and quickdraw:
        options.update(dataset="quickdraw", data_dir=quickdraw, streaming=True, tfds_dir="/tmp/rnnforge_bench_tfds")
    config = resolve_config(task, options)
    run = prepare(config, world_size=workers)  # the Ray worker's model and data
    first_worker = tf.distribute.InputContext(
        num_input_pipelines=workers, input_pipeline_id=0, num_replicas_in_sync=workers
    )
    dataset, batch = training_batches(run, first_worker), config.batch_size
    feed = pipeline_rate(dataset, batch, steps)
    train = training_rate(run.model, dataset, batch, steps)
    return {
        "task": task,
        "dataset": config.dataset,
        "batch_size": batch,
        "pipeline_samples_per_s": round(feed, 1),
        "training_samples_per_s": round(train, 1),
        "headroom": round(feed / train, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sketch,forecast,video")
    parser.add_argument("--workers", type=int, default=2, help="shards: the worker count the pipeline serves")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quickdraw", help="sketch: stream this QuickDraw folder instead of the synthetic data")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = [measure(t.strip(), args.workers, args.steps, args.quickdraw) for t in args.tasks.split(",") if t.strip()]
    print(
        "| task | dataset | batch | tf.data samples/s | training samples/s | headroom |\n|---|---|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['task']} | {r['dataset']} | {r['batch_size']} | {r['pipeline_samples_per_s']:,.0f} | "
            f"{r['training_samples_per_s']:,.0f} | {r['headroom']:.1f}x |"
        )
    if args.output:
        from rnnforge.core.fileio import write_json

        write_json(args.output, rows)


if __name__ == "__main__":
    main()
