"""Shared test fixtures. Helpers append their fixtures below; keep each small."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MLPERF_DIR = SHARED / "fixtures" / "mlperf_tiny"


@pytest.fixture(scope="session")
def mlperf_dir() -> Path:
    if not MLPERF_DIR.is_dir():
        pytest.fail(f"MLPerf Tiny fixtures missing at {MLPERF_DIR} (CI lays ../shared beside the clone)")
    return MLPERF_DIR


@pytest.fixture(scope="session")
def kws_tflite(mlperf_dir: Path) -> bytes:
    return (mlperf_dir / "kws_ref_model.tflite").read_bytes()


@pytest.fixture(scope="session")
def ic_tflite(mlperf_dir: Path) -> bytes:
    return (mlperf_dir / "pretrainedResnet_quant.tflite").read_bytes()
