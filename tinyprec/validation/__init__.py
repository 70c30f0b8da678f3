"""Stage 4: validation on emulated MCU inference.

:func:`validate_model` validates a run folder against its FP32 baseline; :func:`validate_tflite` a
foreign int8 .tflite on a .npz. Both return a :class:`ValidationResult`.
"""

from tinyprec.validation.api import validate_tflite
from tinyprec.validation.artifacts import validate_artifacts, validate_model
from tinyprec.validation.validate import GateSettings, ValidationResult

__all__ = ["GateSettings", "ValidationResult", "validate_artifacts", "validate_model", "validate_tflite"]
