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



# --- tests that depend on the CPU's bf16 detection ----------------------------------------------------
# Modules whose tests train or quantize under the `auto` precision policy carry `pytestmark =
# pytest.mark.trains`; .ci/run reruns `-m trains` with TINYPREC_CPU_BF16 forced to the branch its machine
# does not take. A spy on the CPU detection catches a module that lags: the session fails when a test
# outside a `trains` module consulted it (also from a fixture set up for it).
_consulted: dict[str, pytest.Item] = {}
_current: list[pytest.Item] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "trains: trains or quantizes under the auto precision policy")
    from tinyprec.training import precision

    real = precision.cpu_has_native_bf16

    def spy() -> bool:
        if _current:
            _consulted.setdefault(_current[-1].nodeid, _current[-1])
        return real()

    precision.cpu_has_native_bf16 = spy  # type: ignore[assignment]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    _current.append(item)
    yield
    _current.pop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lagging = sorted(n for n, item in _consulted.items() if item.get_closest_marker("trains") is None)
    if lagging:
        print("\nThese tests consulted the CPU bf16 detection but their module is not marked `trains`"
              " (add `pytestmark = pytest.mark.trains`):\n  " + "\n  ".join(lagging))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
