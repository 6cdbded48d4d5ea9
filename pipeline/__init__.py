"""Datasets and tf.data input pipelines for the rnnforge tasks."""

import rnnforge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
