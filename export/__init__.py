"""ONNX conversion, parity checks, the ONNX Runtime benchmark and reports."""

import rnnforge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
