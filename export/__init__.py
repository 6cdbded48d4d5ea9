"""ONNX conversion, parity checks, the ONNX Runtime benchmark and reports."""
