"""MCU resources: MAC counts, the latency calibration on MLPerf Tiny, boards, flash/RAM needs."""

from __future__ import annotations

import pytest

from tinyprec.errors import DataError
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.ir import OpType
from tinyprec.mcu import latency
from tinyprec.mcu.boards import BOARDS, check_fit, get_board
from tinyprec.mcu.flash import resources
from tinyprec.mcu.macs import op_costs, total_macs


@pytest.fixture(scope="module")
def calib(kws_tflite: bytes, ic_tflite: bytes) -> dict[str, list]:  # type: ignore[type-arg]
    return {
        "kws_ref_model.tflite": op_costs(read_tflite(kws_tflite)),
        "pretrainedResnet_quant.tflite": op_costs(read_tflite(ic_tflite)),
    }


def test_macs_of_mlperf_models(kws_tflite: bytes, ic_tflite: bytes) -> None:
    kws = read_tflite(kws_tflite)
    costs = op_costs(kws)
    first = costs[0]  # 10x4 conv, 1 -> 64 channels, stride 2, SAME on 49x10: 25x5 outputs
    assert first.op is OpType.CONV_2D and first.macs == 25 * 5 * 64 * 10 * 4 * 1
    dw = costs[1]  # 3x3 depthwise on 25x5x64
    assert dw.op is OpType.DEPTHWISE_CONV_2D and dw.macs == 25 * 5 * 64 * 9
    assert costs[-2].op is OpType.FULLY_CONNECTED and costs[-2].macs == 64 * 12
    assert first.params == 64 * 10 * 4 + 64  # weights + bias
    # MLPerf Tiny quotes about 2.7M MACs for DS-CNN KWS and 12.5M for ResNet-8 IC.
    assert 2.6e6 < total_macs(kws) < 2.7e6
    assert 12.4e6 < total_macs(read_tflite(ic_tflite)) < 12.6e6


def test_calibration_constants_are_the_fit(calib: dict[str, list]) -> None:  # type: ignore[type-arg]
    fit = latency.fit_calibration(calib.items())
    for cls, value in latency.CYCLES_PER_MAC.items():
        assert value == pytest.approx(fit.cycles_per_mac[cls], rel=1e-3)
    for name, err in latency.ONE_CLASS_FIT_ERROR.items():
        assert err == pytest.approx(fit.one_class_relative_error[name], abs=1e-3)
    assert fit.cycles_per_mac["depthwise"] > fit.cycles_per_mac["dense"]  # reference depthwise is less efficient


def test_estimate_reproduces_published_latencies(calib: dict[str, list]) -> None:  # type: ignore[type-arg]
    for name, published in latency.CALIBRATION_POINTS.items():
        est = latency.estimate_latency(calib[name], "cortex-m4@120")
        assert est.ms == pytest.approx(published, rel=1e-3)
        assert "estimate" in est.label
        assert sum(ms for _, _, ms in est.per_op_ms) == pytest.approx(est.ms)


def test_targets_scale_with_clock_and_core(calib: dict[str, list]) -> None:  # type: ignore[type-arg]
    costs = calib["kws_ref_model.tflite"]
    m4 = latency.estimate_latency_ms(costs, "cortex-m4@120")
    assert latency.estimate_latency_ms(costs, "cortex-m4@60") == pytest.approx(2 * m4)
    assert latency.estimate_latency_ms(costs, "cortex-m7@120") < m4 < latency.estimate_latency_ms(costs, "cortex-m0+@120")
    assert latency.parse_target("cortex-m7").mhz == 280.0
    with pytest.raises(DataError, match="unknown target"):
        latency.parse_target("pentium")


def test_boards_and_fit_verdict() -> None:
    assert {"nrf52840", "stm32l4r5", "stm32h7a3", "rp2040", "esp32s3"} <= set(BOARDS)
    board = get_board("STM32L4R5")
    assert board.core == "cortex-m4" and board.mhz == 120.0 and board.ram_bytes == 640 * 1024
    latency.parse_target(board.target)  # every board names a known core
    for b in BOARDS.values():
        latency.parse_target(b.target)
    ok = check_fit(get_board("nrf52840"), 100_000, 200_000)
    assert ok.fits and "fits" in ok.summary()
    bad = check_fit(get_board("nrf52840"), 300_000, 200_000)
    assert not bad.fits and not bad.ram_fits and bad.flash_fits
    assert f"over by {300_000 - 256 * 1024} bytes" in bad.summary()
    with pytest.raises(DataError, match="unknown board"):
        get_board("arduino-uno")


def test_resources_of_kws(kws_tflite: bytes) -> None:
    graph = read_tflite(kws_tflite)
    res = resources(graph, len(kws_tflite), 24272)
    assert res.resolver == ("AddConv2D", "AddDepthwiseConv2D", "AddAveragePool2D", "AddReshape",
                            "AddFullyConnected", "AddSoftmax")
    assert res.io_buffer_bytes == 4 * (49 * 10 + 12)
    assert res.ram_bytes == 24272 + res.io_buffer_bytes
    assert res.flash_bytes > len(kws_tflite)


def test_macs_agree_with_the_emulator(kws_tflite: bytes, ic_tflite: bytes) -> None:
    # Two independent counts: ours from the IR shapes, the emulator's from its prepared kernels.
    from tinyprec.emulator import Emulator
    from tinyprec.mcu.macs import MAC_OPS

    for data in (kws_tflite, ic_tflite):
        graph = read_tflite(data)
        emulated = Emulator(graph).macs()
        for cost in op_costs(graph):
            if cost.op in MAC_OPS:
                assert cost.macs == emulated[cost.name], cost
