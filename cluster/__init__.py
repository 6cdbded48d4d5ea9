"""Ray Train: the per-worker training loop, its launcher, scaling and checkpoints."""
