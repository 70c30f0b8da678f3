"""No table lags: every IR OpType has a row in every layer's table, and the aten-op table (optable/table.py)
is the one source of the quantizer's roles, the lowering's handlers and the README's op list."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tinyprec.ir import OpType
from tinyprec.ir.ops import OPTIONS_TYPE

ROOT = Path(__file__).resolve().parents[1]


def _layer_tables() -> dict[str, object]:
    from tinyprec.emulator.ops import PREPARE
    from tinyprec.formats.firmware import RESOLVER_METHOD
    from tinyprec.formats.onnx_qdq import EMITTERS
    from tinyprec.formats.tflite_ops import OP_TABLE
    from tinyprec.formats.tflite_reader import _BUILTINS
    from tinyprec.formats.tflite_reader_options import OPTION_READERS
    from tinyprec.mcu.flash import RESOLVER
    from tinyprec.mcu.latency import _PER_OUTPUT
    from tinyprec.mcu.firmware_build import OP_KERNELS
    from tinyprec.mcu.macs import _MACS
    from tinyprec.quant.exact_table import EXACT_BY_OPTYPE

    return {
        "ir OPTIONS_TYPE": OPTIONS_TYPE,
        "tflite writer OP_TABLE": OP_TABLE,
        "tflite reader builtins": {op: code for code, op in _BUILTINS.items()},
        "tflite reader OPTION_READERS": OPTION_READERS,
        "emulator PREPARE": PREPARE,
        "onnx EMITTERS": EMITTERS,
        "tflm_exact EXACT_BY_OPTYPE": EXACT_BY_OPTYPE,
        "firmware RESOLVER_METHOD": RESOLVER_METHOD,
        "mcu flash RESOLVER": RESOLVER,
        "mcu macs _MACS": _MACS,
        "mcu latency _PER_OUTPUT": _PER_OUTPUT,
        "mcu firmware_build OP_KERNELS": OP_KERNELS,
    }


@pytest.mark.parametrize("table", list(_layer_tables()))
def test_every_optype_has_a_row(table: str) -> None:
    rows = _layer_tables()[table]
    missing = [op.value for op in OpType if op not in rows]  # type: ignore[operator]
    assert not missing, f"{table} lacks {missing}; see docs/DESIGN.md 'Adding an op'"


def test_every_optype_has_a_support_row() -> None:
    """tinyprec/ir/support.py (issue 10's precision table) once it exists on this branch."""
    try:
        support = importlib.import_module("tinyprec.ir.support")
    except ModuleNotFoundError:
        pytest.skip("tinyprec/ir/support.py is not on this branch yet (issue 10 adds it)")
    missing = [op.value for op in OpType if op not in support.OP_SUPPORT]
    assert not missing, f"ir/support.py OP_SUPPORT lacks {missing}"


def test_writer_and_reader_agree_on_builtin_codes() -> None:
    from tinyprec.formats.tflite_ops import OP_TABLE
    from tinyprec.formats.tflite_reader import _BUILTINS

    for op, spec in OP_TABLE.items():
        assert _BUILTINS.get(spec.code) is op, (op, spec.code)


def test_exact_rows_name_real_modules() -> None:
    pytest.importorskip("torch")
    from tinyprec.quant.exact import _modules
    from tinyprec.quant.exact_ops import more_modules
    from tinyprec.quant.exact_table import EXACT_BY_OPTYPE, FLOAT_EXACT, NOT_EXACT

    modules = {**_modules(), **more_modules()}
    for op, how in EXACT_BY_OPTYPE.items():
        assert how in (FLOAT_EXACT, NOT_EXACT) or how in modules, (op, how)


def test_one_aten_table_drives_quantizer_and_lowering() -> None:
    pytest.importorskip("torch")
    from tinyprec.lowering.table import HANDLERS, LOWERINGS
    from tinyprec.quant.ops import FIXED_QPARAMS, OP_ROLES
    from tinyprec.optable.table import OPS
    from tinyprec.quant.quantizer import TFLiteInt8Quantizer
    from tinyprec.optable.roles import Role

    handled = {str(k) for k in HANDLERS}
    for name, row in OPS.items():
        assert OP_ROLES[name] is row.role
        if row.lowering is not None:
            assert row.lowering in LOWERINGS, (name, row.lowering)
            assert name in handled, name
        assert (row.role is Role.FIXED) == (name in FIXED_QPARAMS), name
    used = {row.lowering for row in OPS.values()}
    assert set(LOWERINGS) <= used, f"lowering handlers no row uses: {set(LOWERINGS) - used}"
    plumbing = {n for n in handled if n.startswith("quantized_decomposed.")}
    assert handled - plumbing == {n for n, r in OPS.items() if r.lowering is not None}
    assert set(Role) <= set(TFLiteInt8Quantizer._ANNOTATORS)


def test_readme_op_table_is_generated_from_the_tables() -> None:
    from tinyprec.optable.doc import README_BEGIN, README_END, markdown_table

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_BEGIN in text and README_END in text, "README lacks the generated op table markers"
    section = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]
    assert section.strip() == markdown_table().strip(), (
        "README's op table is stale: run `python -m tinyprec.optable.doc README.md`")
