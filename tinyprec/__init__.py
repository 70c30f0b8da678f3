"""tinyprec: from a PyTorch model to an int8 model that TensorFlow Lite Micro computes exactly.

Stages: :func:`train` (mixed precision), :func:`quantize` (QAT/PTQ), :func:`export`
(int8 .tflite, int8 ONNX, firmware bundle), :func:`validate` (accuracy on emulated MCU inference),
and :func:`run` for all four from a recipe. See :mod:`tinyprec.api` for a worked example.

>>> import tinyprec
>>> sorted(n for n in ("train", "quantize", "export", "validate", "run") if callable(getattr(tinyprec, n)))
['export', 'quantize', 'run', 'train', 'validate']
"""

from __future__ import annotations

from tinyprec._quiet import quiet_third_party

quiet_third_party()

from tinyprec.api import export, quantize, run, train, validate  # noqa: E402

__version__ = "0.1.0"

__all__ = ["__version__", "export", "quantize", "run", "train", "validate"]
