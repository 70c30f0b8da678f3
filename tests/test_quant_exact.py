"""tflm_exact: the converted program rewritten to TFLM's integer arithmetic (issue 4 acceptance).

For every zoo architecture after a short QAT on synthetic data: TFLM's int8 output equals the exact
program's on >= 99% of elements and differs by <= 1 LSB elsewhere; the plain converted program is not
modified (same graph code, same outputs before and after). Unit checks of the fixed-point helpers
against the emulator's scalar functions (which are bit-exact with TFLM).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_export_zoo import FAST, SLOW, short_qat  # noqa: E402

# Uses test_export_zoo's short QAT under the auto precision policy: CI reruns it with the bf16 detection flipped.
pytestmark = pytest.mark.trains


def _check(arch: str) -> None:
    from tinyprec.exporting.stage import _golden
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.check import quantize_input, reference_output
    from tinyprec.recipe import ExportConfig
    from tinyprec.runtimes.tflm import run_tflm

    heavy = arch == "mobilenet_v1"
    converted, ds = short_qat(arch, samples=20 if heavy else 48, batch_size=4 if heavy else 8)
    x = ds.inputs("test")[: 2 if heavy else 8]
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name=arch)
    data = write_tflite(graph)
    code_before = converted.code
    q = quantize_input(x, graph.tensors[graph.inputs[0]].qparams)
    plain_before = reference_output(converted, graph, q)
    exact_gm = tflm_exact(converted)
    assert any(n.op == "call_module" and n.target.startswith("_tflm_exact") for n in exact_gm.graph.nodes)
    # The export check runs TFLM once and compares it with the plain and the exact program.
    _, tflm_out, check = _golden(converted, graph, data, x, ExportConfig(golden_vectors=len(x)), run_tflm)
    assert check["elements"] == tflm_out.size == plain_before.size
    assert check["tflm_exact_fraction"] >= 0.99 and check["tflm_exact_max_abs_diff"] <= 1, check
    assert check["exact_fraction"] <= check["tflm_exact_fraction"]
    assert converted.code == code_before  # the plain program is untouched
    assert np.array_equal(reference_output(converted, graph, q), plain_before)
    if arch == "mnist1d_cnn":
        _check_runner(graph, data, converted, x)


def _check_runner(graph, data: bytes, converted, x: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Validation's "fake_quant_tflm" runner gives TFLM's int8; "fake_quant" still runs the plain program."""
    from tinyprec.validation.runners import RUNNERS, Models, Runner, make_feed

    models = Models(graph, data, fake_quant=converted, input_layout=graph.metadata.get("input_layout", "NF"),
                    output_layout=graph.metadata.get("output_layout", "NF"))
    feed = make_feed(models, x)
    _, q_tflm, _ = RUNNERS[Runner.TFLM](models, feed, None)
    _, q_exact, _ = RUNNERS[Runner.FAKE_QUANT_TFLM](models, feed, None)
    _, q_plain, _ = RUNNERS[Runner.FAKE_QUANT](models, feed, None)
    assert q_tflm is not None and q_exact is not None and q_plain is not None
    diff = np.abs(q_exact.astype(np.int64) - q_tflm.reshape(q_exact.shape).astype(np.int64))
    assert (diff == 0).mean() >= 0.99 and diff.max(initial=0) <= 1
    plain = np.abs(q_plain.astype(np.int64) - q_tflm.reshape(q_plain.shape).astype(np.int64))
    assert (plain == 0).mean() <= (diff == 0).mean()


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAST + SLOW)
def test_tflm_matches_exact_program(arch: str) -> None:
    _check(arch)


def test_fixed_point_helpers_match_the_emulator() -> None:
    from tinyprec.emulator.fixedpoint import mbqm_double
    from tinyprec.ir.qparams import quantize_multiplier
    from tinyprec.quant.exact_int import mbqm as _mbqm

    rng = np.random.default_rng(0)
    acc = np.concatenate([rng.integers(-(1 << 20), 1 << 20, 400), np.arange(-64, 65) * 1024 + 512])
    for real in (0.000173, 0.0042, 0.5, 0.73, 1.9, 3.0):
        m, s = quantize_multiplier(real)
        got = _mbqm(torch.from_numpy(acc.astype(np.int64)), torch.tensor(m), torch.tensor(s)).numpy()
        want = np.array([mbqm_double(int(a), m, s) for a in acc])
        assert np.array_equal(got, want), real


@pytest.mark.slow
def test_gates_tanh_add_avgpool_softmax_are_exact() -> None:
    """cat, sigmoid-gated MUL, TANH, ADD, 2x2 AVERAGE_POOL_2D, Linear, SOFTMAX: TFLM == exact program."""
    from test_lower import _Mixed

    from tinyprec.data import Dataset
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.check import compare_with_converted
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import QuantConfig

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ds = Dataset.from_arrays(rng.standard_normal((80, 2, 6, 6)).astype(np.float32), np.arange(80) % 5, seed=0)
    converted = ptq(_Mixed().eval(), ds, QuantConfig(mode="ptq", calibration_batches=2, batch_size=16))
    x = ds.inputs("test")
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name="mixed")
    data = write_tflite(graph)
    exact_gm = tflm_exact(converted)
    kept = {str(n.target) for n in exact_gm.graph.nodes if n.op == "call_function" and "aten" in str(n.target)}
    assert kept == {"aten.cat.default", "aten.flatten.using_ints"}  # everything else rewritten
    assert compare_with_converted(exact_gm, graph, data, x).within(1.0, 0)


@pytest.mark.parametrize("scale", [0.004, 0.03, 0.11, 0.6])
def test_softmax_module_matches_the_emulator_kernel(scale: float) -> None:
    """The torch SOFTMAX module against the emulator's TFLM-bit-exact kernel, on random int8 rows."""
    from tinyprec.emulator.kernels import softmax, softmax_exp_tables
    from tinyprec.ir.qparams import quantize_multiplier
    from tinyprec.quant.exact import _modules

    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (64, 10)).astype(np.int8)
    x[:8] = rng.integers(100, 128, (8, 10))  # near-equal rows: large sums
    x[8, :] = 5  # constant row
    module = _modules()["softmax"](float(np.float32(scale)), 1)
    got = module(torch.from_numpy(x)).numpy()
    mult, shift = quantize_multiplier(min(float(np.float32(scale)) * float(1 << 26), float((1 << 31) - 1)))
    raw, acc = softmax_exp_tables(mult, shift, False)
    want = softmax(x, raw, acc, -int(np.floor(31.0 * (1 << 26) / (2.0**shift))))
    assert np.array_equal(got, want)
    nchw = module(torch.from_numpy(x.reshape(4, 16, 10).transpose(0, 2, 1).copy())).numpy()
    assert np.array_equal(nchw.transpose(0, 2, 1).reshape(64, 10), want)  # over dim 1 (channels)


@pytest.mark.parametrize("taps", [64, 1200])  # float32 sums, then float64 (255 * sum|w| >= 2**24)
def test_weighted_module_is_tflm_integer_arithmetic(taps: int) -> None:
    """A linear layer's module against int64 numpy sums + the emulator's double-rounding requantization."""
    from tinyprec.emulator.fixedpoint import mbqm_double
    from tinyprec.ir.qparams import quantize_multiplier
    from tinyprec.quant.exact import _modules

    rng = np.random.default_rng(2)
    w = rng.choice([-127, 127, -90, 3], size=(4, taps)).astype(np.int64)
    bias = rng.integers(-5000, 5000, 4)
    x = rng.integers(-128, 128, (16, taps)).astype(np.int8)
    reals = [0.011 * 0.002 / 0.05 * (1 + c) for c in range(4)]
    module = _modules()["weighted"](torch.ops.aten.linear.default, (), w, bias, -7, reals, -1, 3, -128, 127)
    assert module.dtype == (torch.float32 if taps == 64 else torch.float64)
    got = module(torch.from_numpy(x)).numpy()
    acc = (x.astype(np.int64) + 7) @ w.T + bias
    want = np.empty_like(acc)
    for c in range(4):
        m, s = quantize_multiplier(reals[c])
        want[:, c] = [mbqm_double(int(a), m, s) for a in acc[:, c]]
    assert np.array_equal(got, np.clip(want + 3, -128, 127).astype(np.int8))
