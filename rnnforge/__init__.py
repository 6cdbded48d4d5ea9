"""rnnforge: train sequence models on Ray, export them to ONNX, prove parity and speed.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` (unless the user set it) so that
``tf.keras`` is tf-keras (Keras 2) wherever TensorFlow is imported later: Keras 3 cannot run
``model.fit`` under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). The packages
``cluster``, ``pipeline``, ``models`` and ``export`` import this package first for that reason.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) drowns the CLI's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

#: Environment every process that imports TensorFlow needs (driver and Ray workers).
WORKER_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
