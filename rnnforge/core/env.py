"""Environment variables every process that imports TensorFlow needs (the driver and each Ray worker).

``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` tf-keras (Keras 2): Keras 3 cannot run ``model.fit``
under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). It must be set before TensorFlow
is imported; ``import rnnforge`` (the parent of every sub-package) does that.
"""

WORKER_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) drowns the CLI's own output.
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
