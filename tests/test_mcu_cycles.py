"""The Cortex-M4 cycle accounting (tinyprec.mcu.cycles) on small synthetic instruction streams, and the
instruction-mix latency fits (tinyprec.mcu.latency); no firmware, no emulator."""

from __future__ import annotations

import pytest

from tinyprec.errors import DataError
from tinyprec.mcu import latency
from tinyprec.mcu.cycles import CLASS_CYCLES, Instr, block_cost, mix_from_blocks


def _block(*lines: tuple[str, str, int]) -> list[Instr]:
    return [Instr.parse(m, ops, size) for m, ops, size in lines]


@pytest.mark.parametrize(("mnemonic", "operands", "cls"), [
    ("adds", "r0, #1", "alu"), ("addmi", "r0, r1", "alu"), ("sxtab16", "r0, r1, r2, ror #8", "alu"),
    ("smlad", "r0, r1, r2, r0", "mul"), ("smlabb", "r0, r1, r2, r3", "mul"), ("smull", "r0, r1, r2, r3", "mul"),
    ("mls", "r0, r1, r2, r3", "mla"), ("udiv", "r0, r1, r2", "div"),
    ("ldr.w", "r3, [r1], #4", "load"), ("ldrsb", "r3, [r1, r2]", "load"), ("vldr", "s0, [r1]", "load"),
    ("strb", "r3, [r1, #1]", "store"), ("ldrd", "r2, r3, [r0]", "load_dual"), ("strd", "r2, r3, [r0, #8]", "store_dual"),
    ("push", "{r4, r5, r6, lr}", "store_multiple"), ("pop", "{r4, pc}", "load_multiple"),
    ("bne.w", "#0x120", "branch"), ("bls", "#0x40", "branch"), ("bl", "#0x400", "branch"), ("cbz", "r0, #0x10", "branch"),
    ("tbb", "[pc, r3]", "table_branch"), ("itte", "eq", "it"),
    ("vmla.f32", "s0, s1, s2", "fp_mac"), ("vdiv.f32", "s0, s1, s2", "fp_div"), ("vcvt.f32.s32", "s0, s0", "fp"),
])
def test_classes(mnemonic: str, operands: str, cls: str) -> None:
    assert Instr.parse(mnemonic, operands, 4).cls == cls


def test_register_lists_and_conditions() -> None:
    assert Instr.parse("push", "{r4, r5, r6, r7, lr}", 2).list_regs == 5
    assert Instr.parse("vpush", "{d8, d9, d10}", 4).list_regs == 6  # a D register moves two words
    assert Instr.parse("vldmia", "r0!, {s16-s31}", 4).list_regs == 16
    assert Instr.parse("bne", "#0x10", 2).conditional and not Instr.parse("bl", "#0x10", 4).conditional
    assert Instr.parse("pop", "{r4, pc}", 2).writes_pc and not Instr.parse("pop", "{r4, r5}", 2).writes_pc


@pytest.mark.parametrize(("lines", "cycles"), [
    ([("ldr", "r0, [r1]", 2), ("ldr", "r2, [r3]", 2)], 3),  # the second load pipelines: 2 + 1
    ([("ldr", "r0, [r1]", 2), ("ldr", "r2, [r0]", 2)], 4),  # its address is the first load's result: 2 + 2
    ([("adds", "r1, #4", 2), ("ldr", "r0, [r1]", 2)], 4),  # address written by the ALU just before: 1 + 2 + 1
    ([("str", "r0, [r1, #4]", 2), ("str", "r0, [r1, r2]", 2)], 3),  # immediate offset 1, register offset 2
    ([("ldr", "r0, [r1]", 2), ("str", "r0, [r2, r3]", 2)], 3),  # a store behind a load pipelines
    ([("ldrd", "r0, r1, [r2]", 4), ("ldr", "r3, [r4]", 2)], 5),  # LDRD 3, never pipelined
    ([("push", "{r4, r5, r6, r7, lr}", 2)], 6),  # 1 + N
    ([("cmp", "r0, #0", 2), ("ite", "eq", 2), ("moveq", "r1, #1", 2), ("movne", "r1, #2", 2)], 3),  # IT folds
    ([("cmp.w", "r0, #0x100", 4), ("ite", "eq", 2), ("moveq", "r1, #1", 2)], 3),  # ... not behind a 32-bit one
    ([("smlad", "r0, r1, r2, r0", 4), ("sdiv", "r0, r0, r3", 4)], 1 + CLASS_CYCLES["div"]),
])
def test_block_cycles(lines: list[tuple[str, str, int]], cycles: float) -> None:
    assert block_cost(_block(*lines)).cycles == cycles


def test_mix_counts_taken_branches_from_the_trace_edges() -> None:
    loop = _block(("smlad", "r0, r1, r2, r0", 4), ("subs", "r3, #1", 2), ("bne", "#0x100", 2))  # 0x100..0x108
    ret = _block(("bx", "lr", 2))
    edges = {(0, 0x100): 1, (0x100, 0x100): 9, (0x100, 0x108): 1}  # 10 turns: 9 taken back edges, 1 fall-through
    mix = mix_from_blocks({0x100: loop, 0x108: ret}, edges)
    assert mix.instructions == 31 and mix.by_class == {"mul": 10, "alu": 10, "branch": 11}
    assert mix.base_cycles == 31 and mix.refills == 9 and mix.code_bytes == 10 * 8 + 2
    assert mix.cycles(2.0) == 31 + 18 and mix.cycles(3.0) == 31 + 27


def test_mix_model_fits_one_parameter_on_the_fitted_models_only() -> None:
    mixes = {k: {"base_cycles": b, "refills": 0.0, "code_bytes": 8 * c}
             for k, b, c in (("kws", 1e6, 1e5), ("ic", 4e6, 3e5), ("ad", 1e5, 1e5))}
    pub = {k: (m["base_cycles"] + 5 * m["code_bytes"] / 8) / 120e3 for k, m in mixes.items()}  # 5 cycles per fetch
    fetch = latency.fit_mix_model(mixes, "trm_fetch", pub, fitted_on=("kws", "ic"))
    assert fetch["parameter"] == pytest.approx(5.0) and fetch["relative_error"]["ad"] == pytest.approx(0.0)  # type: ignore[index]
    scaled = latency.fit_mix_model(mixes, "trm_scaled", pub, fitted_on=("kws", "ic"))
    assert scaled["relative_error"]["ad"] < -0.5  # type: ignore[index,operator]  # a pure scale misses the fetch-bound one
    assert scaled["role"] == {"kws": "fitted", "ic": "fitted", "ad": "held out"}
    both = latency.fit_mix_model({**mixes, "ad_mlperf": mixes["ad"], "ad_conv2d": mixes["ad"]}, "trm_scaled",
                                 {**pub, "ad_mlperf": pub["ad"], "ad_conv2d": pub["ad"]})
    assert both["role"]["ad_mlperf"] == "held out" and both["role"]["ad_conv2d"] == "extra"  # type: ignore[index]
    pub["ad"] *= 10
    assert latency.fit_mix_model(mixes, "trm_fetch", pub, fitted_on=("kws", "ic"))["parameter"] == pytest.approx(5.0)
    with pytest.raises(DataError, match="unknown instruction-mix model"):
        latency.fit_mix_model(mixes, "magic", pub)
    with pytest.raises(DataError, match="no mix or published figure for vww"):
        latency.fit_mix_model(mixes, "trm_scaled", pub, fitted_on=("kws", "vww"))


def test_trace_rejects_a_file_that_is_not_an_arm_elf(tmp_path) -> None:  # noqa: ANN001
    from tinyprec.mcu.trace import trace_invokes

    bad = tmp_path / "app.elf"
    bad.write_bytes(b"not an elf at all")
    with pytest.raises(DataError, match="ELF|unicorn"):
        trace_invokes(bad)


def test_fitted_constants_match_the_benchmark_results() -> None:
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "mcu.json").read_text())
    fits = doc.get("latency_models", {})
    if not all(name in fits for name in latency.MIX_MODELS):
        pytest.skip("results/mcu.json was written without the trace extra")
    for name in latency.MIX_MODELS:
        assert latency.MIX_FITTED[name] == pytest.approx(fits[name]["parameter"], abs=5e-4)
        assert fits[name]["role"]["kws"] == "fitted" and fits[name]["role"]["ad"] == "held out"


def test_board_cpi_matches_the_era_benchmark() -> None:
    """CPI_M4_CMSIS_NN is the fit of results/cmsisnn_era.json's primary variant (the 2020 kernels, -Os) on KWS + IC."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cmsisnn_era.json").read_text())
    primary = doc["primary"]
    fit = doc["fits"][primary["opt"]][primary["variant"]]["splits"][0]
    assert fit["fitted_on"] == list(latency.FITTED_ON) == primary["split"]
    assert latency.CPI_M4_CMSIS_NN == pytest.approx(fit["cpi"], abs=5e-4)
    assert latency.ERA_FIT_ERROR == pytest.approx(fit["relative_error"], abs=5e-4)
    assert all(abs(fit["relative_error"][k]) <= 0.25 for k in latency.HELD_OUT)


def test_unaligned_accesses_add_their_documented_cycles() -> None:
    block = _block(("ldr", "r0, [r1]", 2))
    aligned = mix_from_blocks({0x100: block}, {(0, 0x100): 4})
    mix = mix_from_blocks({0x100: block}, {(0, 0x100): 4}, unaligned={(4, 1): 1, (4, 2): 1, (2, 1): 1})
    assert aligned.base_cycles == 8 and mix.base_cycles == 8 + 2 + 1 + 1 and mix.unaligned_accesses == 3
