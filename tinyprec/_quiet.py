"""Silence third-party start-up noise (TensorFlow banners, absl warnings) before heavy imports."""

from __future__ import annotations

import os


def quiet_third_party() -> None:
    """Set the environment that keeps TensorFlow, absl and oneDNN quiet, and drop torch's LeafSpec warning."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    import warnings

    # torch's pytree deprecates LeafSpec and warns whenever a GraphModule holding one is copied.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
