"""The bottom layer: errors, atomic file writes, the run-dir layout, machine facts, plots and
score formatting. It imports no other rnnforge layer."""
