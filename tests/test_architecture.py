"""The import direction of docs/DESIGN.md, checked on the source: torch-free layers, formats/emulator apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tinyprec"
TORCH_FREE = ("ir", "formats", "emulator", "runtimes", "mcu")


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


def test_only_the_cli_prints() -> None:
    for path in sorted(PKG.rglob("*.py")):
        if path.parent.name == "cli" or path.name.startswith("_"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                pytest.fail(f"{path.relative_to(PKG)}:{node.lineno} prints; return results and let the CLI print")
