"""The errors tinyprec raises at its trust boundaries.

Every error carries a one-line message naming what is wrong, where, and how to fix it.
The CLI prints ``str(err)`` and exits with ``err.exit_code`` (2 for bad input, 1 for a failed gate).
"""

from __future__ import annotations


class TinyprecError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RecipeError(TinyprecError):
    """A recipe file is malformed: names the file, the key and what is allowed."""


class UserCodeError(RecipeError):
    """The user's own code (a model builder named in a recipe) raised: one line saying what failed, plus
    ``details``, the traceback frames in the user's files, which the CLI prints above that line."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class DataError(TinyprecError):
    """Input data is unusable (NaN/inf, bad label, wrong shape): names the first bad sample."""


class UnsupportedOpError(TinyprecError):
    """An op that a stage cannot handle: names the op, where it is, and what is supported."""

    def __init__(self, op: str, where: str, hint: str) -> None:
        self.op = op
        self.where = where
        self.hint = hint
        super().__init__(f"unsupported op '{op}' at {where}: {hint}")


class QuantSpecError(TinyprecError):
    """A graph violates the TFLite int8 quantization spec."""


class ModelFormatError(TinyprecError):
    """A model file (.tflite, .onnx, checkpoint) is truncated, corrupted or of an unusable kind."""


class ArtifactError(TinyprecError):
    """An artifact a stage needs is missing or stale: names the file and the stage that makes it."""


class ValidationGateError(TinyprecError):
    """The validation gate failed (accuracy drop or a budget exceeded)."""

    exit_code = 1


class UnsupportedOpsError(UnsupportedOpError):
    """Several unsupported ops at once: one line per refused op (op, module, source line, what to use instead).

    ``refusals`` holds each as an :class:`UnsupportedOpError`; ``op``/``where``/``hint`` are the first one's.
    """

    def __init__(self, refusals: list[UnsupportedOpError], what: str = "the model") -> None:
        self.refusals = list(refusals)
        first = self.refusals[0]
        self.op, self.where, self.hint = first.op, first.where, first.hint
        n = len(self.refusals)
        if n == 1:
            Exception.__init__(self, str(first))
            return
        head = f"{what} has {n} op{'s' if n > 1 else ''} that cannot be converted to TFLite int8 (fix all, then retry):"
        lines = [f"  - '{r.op}' at {r.where}: {r.hint}" for r in self.refusals]
        Exception.__init__(self, "\n".join([head, *lines]))
