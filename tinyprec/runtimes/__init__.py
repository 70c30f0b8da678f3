"""Wrappers of the real runtimes: TFLM, TensorFlow Lite, ONNX Runtime (imported lazily)."""
