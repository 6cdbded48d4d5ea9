"""Ray Train: the per-worker training loop, its launcher, scaling and checkpoints."""

import rnnforge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
