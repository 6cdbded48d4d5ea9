"""What a training run shows on the console: one line per epoch, printed by the driver.

The workers report their metrics to Ray Train (``ray.train.report``); ``ProgressCallback``, a Ray
Train ``UserCallback``, runs in Ray Train's controller and turns rank 0's report into a line; a
Ray queue carries the line to the driver, which prints it (``training_progress``). The workers'
own stdout and stderr stay in Ray's log files (``/tmp/ray/session_latest/logs/worker-*.out|err``
on each node), so no line carries Ray's ``(RayTrainWorker pid=...)`` prefix, and ``ray job logs``
of a submitted run shows the same lines. ``rnnforge --verbose`` streams the workers' output too
(Ray's own console options: ``rnnforge.core.console.ray_init_options``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from rnnforge.core.config import TrainConfig

#: Seconds the driver waits for a line before it looks again whether training ended.
POLL_S = 0.5


def progress_line(entry: dict, epochs: int, metric: str) -> str:
    """``epoch 3/15  loss 0.4012  accuracy 0.8750  val_loss ...  2620 samples/s (1310/worker)  3.0s  eta 36s``."""
    nan = float("nan")
    remaining = (epochs - entry["epoch"]) * entry["seconds"]
    return (
        f"epoch {entry['epoch']}/{epochs}  loss {entry['loss']:.4f}  {metric} {entry.get(metric, nan):.4f}  "
        f"val_loss {entry.get('val_loss', nan):.4f}  val_{metric} {entry.get('val_' + metric, nan):.4f}  "
        f"{entry['samples_per_s']:.0f} samples/s ({entry['samples_per_s_per_worker']:.0f}/worker)  "
        f"{entry['seconds']:.1f}s  eta {remaining:.0f}s"
    )


def report_lines(metrics: dict, epochs: int, metric: str, restarts_seen: int, every: int = 1) -> list[str]:
    """The console lines of one report of rank 0 (``WorkerTraining.reported``): a resume notice
    when the report comes from a restarted worker group, then the epoch's line (the first, every
    ``every``-th and the last epoch's) or the end."""
    lines = []
    if metrics.get("restarts", 0) > restarts_seen:
        resized = metrics.get("resized_from")
        lines.append(
            f"resumed from checkpoint after epoch {metrics.get('resumed_after', 0)} (restart {metrics['restarts']}"
            + (f"; {resized} -> {metrics['world_size']} workers" if resized else "")
            + ")"
        )
    if metrics.get("finished"):
        lines.append(f"training done in {metrics.get('fit_seconds', 0.0):.1f}s")
    elif "loss" in metrics and (metrics["epoch"] in (1, epochs) or metrics["epoch"] % every == 0):
        lines.append(progress_line(metrics, epochs, metric))
    return lines


def progress_callback_class():
    """``ProgressCallback``: a ``ray.train.UserCallback`` (Ray is imported only when training)."""
    from ray.train import UserCallback

    class ProgressCallback(UserCallback):
        """Runs in Ray Train's controller: each report of rank 0 becomes lines on ``queue``."""

        def __init__(self, queue, epochs: int, metric: str, every: int):
            self.queue, self.epochs, self.metric, self.every = queue, epochs, metric, every
            self.restarts_seen = 0

        def after_report(self, run_context, metrics, checkpoint) -> None:
            if not metrics:
                return
            lines = report_lines(metrics[0], self.epochs, self.metric, self.restarts_seen, self.every)
            self.restarts_seen = max(self.restarts_seen, metrics[0].get("restarts", 0))
            with contextlib.suppress(Exception):  # the console's lines never stop training
                for line in lines:
                    self.queue.put_nowait(line)

    return ProgressCallback


@contextlib.contextmanager
def training_progress(config: TrainConfig, every: int = 1) -> Iterator[object]:
    """Yield the callback for ``RunConfig(callbacks=[...])``; print its lines while the block runs
    (and any left when it ends); ``every``: a line every that many epochs (and the first and last).
    Needs a connected Ray."""
    import ray
    from ray.util.queue import Empty, Queue

    # on the driver's node (as Ray Train pins its controller there): a lost node takes no line with it
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rnnforge.models import get_spec

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    callback = progress_callback_class()(queue, config.epochs, get_spec(config.task).metrics[0], every)
    done = threading.Event()

    def show(block: bool) -> bool:
        try:
            line = queue.get(block=block, timeout=POLL_S if block else None)
        except Empty:
            return False
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return True

    def pump() -> None:
        with contextlib.suppress(Exception):  # Ray going down ends the pump; the driver reports why
            while not done.is_set():
                show(block=True)

    printer = threading.Thread(target=pump, name="rnnforge-progress", daemon=True)
    printer.start()
    try:
        yield callback
    finally:
        done.set()
        printer.join(timeout=10)
        with contextlib.suppress(Exception):
            while show(block=False):
                pass
        with contextlib.suppress(Exception):
            queue.shutdown()
