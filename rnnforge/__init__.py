"""rnnforge: train sequence models on Ray, export them to ONNX, prove parity and speed.

The layers, bottom to top (each imports only from itself and the levels below it; cluster and
export stand side by side and import neither way; docs/architecture.md)::

    rnnforge.core      errors, file writes, run-dir layout, machine facts, plots, MLflow tracking
    rnnforge.pipeline  datasets and tf.data input pipelines            (folder pipeline/)
    rnnforge.models    task specs and Keras builders                    (folder models/)
    rnnforge.cluster   Ray Train: in-process fit, worker loop, launcher (folder cluster/)
    rnnforge.export    ONNX export, parity, bench, reports; beside cluster (folder export/)
    rnnforge.cli, rnnforge.demo   the application

Importing this package (the parent of every sub-package) sets ``TF_USE_LEGACY_KERAS=1``, unless
the user set it, before anything can import TensorFlow (see ``rnnforge.core.env``), and makes the
first ``import tensorflow`` capture TensorFlow's C++ start-up lines (``rnnforge.core.console``).
"""

import os
from pathlib import Path

from rnnforge.core.checkout import install_checkout_folders
from rnnforge.core.console import install_tensorflow_import_capture
from rnnforge.core.env import WORKER_ENV

for _key, _value in WORKER_ENV.items():
    os.environ.setdefault(_key, _value)
install_tensorflow_import_capture()  # TensorFlow's C++ start-up lines: shown only on failure or --verbose

__version__ = "0.1.0"

# cluster/, pipeline/, models/ and export/ sit beside this folder in a source checkout (a
# `ray job submit --working-dir .` upload included): found as rnnforge.<folder>, and nothing else is.
install_checkout_folders(Path(__file__).parent)
