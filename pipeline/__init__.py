"""Datasets and tf.data input pipelines for the rnnforge tasks."""

import rnnforge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from pipeline import sketch_rnn  # noqa: F401,E402  (registers the sketch_rnn TFDS dataset)
