"""``TF_CONFIG`` for MultiWorkerMirroredStrategy, set on each Ray Train worker as Ray's own
``TensorflowConfig`` sets it, without TensorFlow in Ray Train's controller.

Ray Train's controller unpickles the trainer's backend config; ``ray.train.tensorflow``'s package
imports TensorFlow first thing, so with Ray's ``TensorflowConfig`` the controller (which never runs
a TensorFlow op) imports it before it starts the first worker, on every run and every restart.
This module imports Ray only (tests/test_cluster_scale.py checks both).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig


def _worker_url() -> str:
    """``host:port`` this worker's MultiWorkerMirroredStrategy server will listen on."""
    from ray._common.network_utils import build_address
    from ray.train._internal.utils import get_address_and_port

    return build_address(*get_address_and_port())


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    """The cluster spec MultiWorkerMirroredStrategy reads from ``TF_CONFIG`` on worker ``index``."""
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": worker_addresses}, "task": {"type": "worker", "index": index}}
    )


class _MultiWorkerBackend(Backend):
    def on_start(self, worker_group, backend_config) -> None:
        import ray

        urls = worker_group.execute(_worker_url)
        ray.get(
            [
                worker_group.execute_single_async(i, _set_tf_config, worker_addresses=urls, index=i)
                for i in range(len(worker_group))
            ]
        )


@dataclass
class MultiWorkerConfig(BackendConfig):
    """Ray Train's backend config for rnnforge's TensorFlow workers (``DataParallelTrainer``'s
    ``backend_config``), reported to Ray's dashboard as a TensorFlow run."""

    @property
    def backend_cls(self):
        return _MultiWorkerBackend

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TENSORFLOW
