"""The Arm GNU toolchain, QEMU, the Cortex-M targets and their boards, and the TFLM source tree.

Missing tools raise :class:`ToolchainMissing` naming the Debian packages; a folder that is not a
standalone TFLM tree (one with ``tflm_sources.mk``) raises a one-line DataError naming ``--tflm-tree``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tinyprec.errors import DataError, TinyprecError

DEBIAN_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "libstdc++-arm-none-eabi-newlib", "qemu-system-arm")
TREE_ENV = "TINYPREC_TFLM_TREE"


class ToolchainMissing(TinyprecError):
    """The Arm GNU toolchain or QEMU is not installed."""

    exit_code = 2


@dataclass(frozen=True)
class Target:
    """A Cortex-M core as TFLM's cortex_m_generic builds it, and the QEMU board that runs it."""

    name: str
    mcpu: str
    mfpu: str
    cmsis_device: str  # ARMCM4 ... (Cortex_DFP device header)
    board: str  # qemu-system-arm -M
    flash_origin: int
    flash_length: int
    ram_origin: int
    ram_length: int


TARGETS: dict[str, Target] = {
    "cortex-m4": Target("cortex-m4", "cortex-m4", "fpv4-sp-d16", "ARMCM4", "mps2-an386",
                        0x0, 4 << 20, 0x20000000, 4 << 20),
    "cortex-m7": Target("cortex-m7", "cortex-m7", "fpv5-sp-d16", "ARMCM7", "mps2-an500",
                        0x0, 4 << 20, 0x20000000, 4 << 20),
    "cortex-m33": Target("cortex-m33", "cortex-m33", "fpv5-sp-d16", "ARMCM33", "mps2-an505",
                         0x10000000, 4 << 20, 0x38000000, 2 << 20),
}


@dataclass(frozen=True)
class Toolchain:
    gcc: str
    gxx: str
    ar: str
    size: str
    nm: str
    qemu: str

    @property
    def version(self) -> str:
        return _tool_version(self.gcc)


@lru_cache(maxsize=None)
def _tool_version(gcc: str) -> str:
    return subprocess.run([gcc, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]


def missing_toolchain_message(what: Iterable[str]) -> str:
    return (f"{', '.join(what)} not found on PATH; install the Debian packages: "
            f"apt-get install {' '.join(DEBIAN_PACKAGES)}")


def find_toolchain(*, need_qemu: bool = True) -> Toolchain:
    """The arm-none-eabi tools and qemu-system-arm, or :class:`ToolchainMissing` naming the packages."""
    names = {"gcc": "arm-none-eabi-gcc", "gxx": "arm-none-eabi-g++", "ar": "arm-none-eabi-ar",
             "size": "arm-none-eabi-size", "nm": "arm-none-eabi-nm", "qemu": "qemu-system-arm"}
    found = {k: shutil.which(v) for k, v in names.items()}
    missing = [names[k] for k, v in found.items() if v is None and (need_qemu or k != "qemu")]
    if missing:
        raise ToolchainMissing(missing_toolchain_message(missing))
    return Toolchain(**{k: v or "" for k, v in found.items()})


def toolchain_available() -> bool:
    try:
        find_toolchain()
    except ToolchainMissing:
        return False
    return True


def resolve_tree(explicit: str | Path | None = None, recipe_value: str | Path | None = None) -> Path | None:
    """The TFLM tree: ``--tflm-tree``, else ``$TINYPREC_TFLM_TREE``, else the recipe's ``[validate] tflm_tree``."""
    for value in (explicit, os.environ.get(TREE_ENV) or None, recipe_value):
        if value:
            return check_tree(Path(value).expanduser())
    return None


def check_tree(tree: Path) -> Path:
    """``tree`` if it is a standalone TFLM tree with tflm_sources.mk; else a one-line DataError."""
    tree = tree.resolve()
    if not (tree / "tflm_sources.mk").is_file() or not (tree / "tensorflow/lite/micro/micro_interpreter.h").is_file():
        raise DataError(f"{tree} is not a standalone TFLM tree (needs tflm_sources.mk and tensorflow/lite/micro/); "
                        f"pass --tflm-tree DIR or set {TREE_ENV} to one (e.g. ../shared/third_party/tflm)")
    return tree


@lru_cache(maxsize=8)
def tree_fingerprint(tree: Path) -> str:
    """sha256 over every file's path and content in the tree (about 11 MB: tens of milliseconds)."""
    h = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(tree)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=8)
def source_lists(tree: Path) -> dict[str, tuple[str, ...]]:
    """The ``NAME := a b c`` lists of tflm_sources.mk (backslash continuations joined)."""
    text = (tree / "tflm_sources.mk").read_text().replace("\\\n", " ")
    lists = {}
    for m in re.finditer(r"^([A-Z0-9_]+)\s*:=\s*(.*)$", text, re.MULTILINE):
        lists[m.group(1)] = tuple(m.group(2).split())
    for needed in ("TFLM_CORE_SRCS", "TFLM_KERNEL_SRCS_REFERENCE", "TFLM_KERNEL_SRCS_CMSIS_NN", "CMSIS_NN_SRCS"):
        if needed not in lists:
            raise DataError(f"{tree / 'tflm_sources.mk'} has no {needed} list; regenerate the tree")
    return lists


def get_target(name: str) -> Target:
    key = name.lower().replace("_", "-")
    if key not in TARGETS:
        raise DataError(f"unknown MCU target '{name}'; use one of {', '.join(TARGETS)}")
    return TARGETS[key]
