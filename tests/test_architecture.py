"""The import direction of docs/DESIGN.md, checked on the source: torch-free layers, formats/emulator apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tinyprec"
TORCH_FREE = ("ir", "formats", "emulator", "runtimes", "mcu", "optable")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_layer_never_imports_torch(layer: str) -> None:
    for path in sorted((PKG / layer).glob("*.py")):
        bad = {n for n in _imports(path) if n == "torch" or n.startswith(("torch.", "torchao"))}
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_formats_and_emulator_do_not_import_each_other() -> None:
    for a, b in (("formats", "emulator"), ("emulator", "formats")):
        for path in sorted((PKG / a).glob("*.py")):
            bad = {n for n in _imports(path) if n.startswith(f"tinyprec.{b}")}
            assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_ir_imports_only_errors_and_itself() -> None:
    for path in sorted((PKG / "ir").glob("*.py")):
        ours = {n for n in _imports(path) if n.startswith("tinyprec")}
        assert all(n.startswith(("tinyprec.ir", "tinyprec.errors")) for n in ours), (path.name, ours)


def _ours(path: Path) -> set[str]:
    """Every tinyprec module a file imports, at module level or inside a function."""
    return {n for n in _imports(path) if n.startswith("tinyprec")}


@pytest.mark.parametrize("layer", ["optable", "lowering"])
def test_op_table_and_lowering_sit_below_the_quantizer(layer: str) -> None:
    """One op table drives the quantizer and the lowering: neither imports tinyprec.quant (no package circle)."""
    above = ("tinyprec.quant", "tinyprec.exporting", "tinyprec.validation", "tinyprec.pipeline", "tinyprec.api",
             "tinyprec.cli", "tinyprec.training")
    if layer == "optable":
        above += ("tinyprec.lowering", "tinyprec.runtimes", "tinyprec.mcu", "tinyprec.formats", "tinyprec.emulator")
    for path in sorted((PKG / layer).glob("*.py")):
        bad = {n for n in _ours(path) if n.startswith(above)}
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_lowering_modules_import_without_a_circle() -> None:
    """Inside tinyprec.lowering, lazy imports included, module imports form no cycle (the old lower*.py did)."""
    mods = {p.stem: p for p in (PKG / "lowering").glob("*.py") if p.stem != "__init__"}
    deps = {m: {n.split(".")[2] for n in _ours(p) if n.startswith("tinyprec.lowering.")} for m, p in mods.items()}
    for m, p in mods.items():  # `from tinyprec.lowering import table`
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "tinyprec.lowering":
                deps[m] |= {a.name for a in node.names}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, "import circle: " + " -> ".join([*path, m])
        state[m] = 1
        for d in sorted(deps.get(m, ())):
            visit(d, [*path, m])
        state[m] = 2

    for m in sorted(mods):
        visit(m, [])
    assert deps["table"] >= {"ops", "act", "more", "shape"} and "table" not in set().union(
        *(deps[m] for m in ("ops", "act", "more", "shape", "common", "state", "nodes")))


def test_only_the_cli_prints() -> None:
    for path in sorted(PKG.rglob("*.py")):
        if path.parent.name == "cli" or path.name.startswith("_"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                pytest.fail(f"{path.relative_to(PKG)}:{node.lineno} prints; return results and let the CLI print")
