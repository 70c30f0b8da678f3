"""Exact instruction trace of one inference of a firmware image: the Unicorn engine runs the linked ELF.

An optional path (``pip install tinyprec[trace]``: unicorn, capstone) beside QEMU's ``-icount`` count:
the image built for the Cortex-M4 QEMU board (:mod:`tinyprec.mcu.firmware_build`) runs on Unicorn's
Cortex-M4 model from its reset vector. Arm semihosting calls (BKPT 0xAB) are served for the console and
the command line (no sample files: golden vectors only); SysTick reads return a falling count. A block
hook counts, for every ``Invoke()`` of the interpreter, how often control passed from one translated
block to the next; the blocks are disassembled with capstone. That is an exact dynamic instruction
trace (which instructions ran, how often, which branches were taken), from which
:func:`instruction_mix` counts instructions by class and costs them (:mod:`tinyprec.mcu.cycles`).
Optionally the addresses of every data read from flash (the model's weights, literal pools) and the
unaligned halfword/word data accesses are recorded too.

The instruction total of an inference is cross-checked against QEMU's count in the benchmark.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyprec.errors import DataError
from tinyprec.mcu.cycles import InstructionMix, Instr, mix_from_blocks

INVOKE_SYMBOL = "_ZN6tflite16MicroInterpreter6InvokeEv"
FLASH = (0x0, 4 << 20)  # mps2-an386: code memory at 0, RAM at 0x20000000
RAM = (0x20000000, 4 << 20)
SCS = 0xE000E000
_SYST_CVR = 0x18
_SH_WRITE0, _SH_CMDLINE, _SH_EXIT, _SH_EXIT_EXTENDED = 0x04, 0x15, 0x18, 0x20


@dataclass(frozen=True)
class InvokeTrace:
    """One ``Invoke()``: (from block, to block) -> times taken, and the block code, address -> bytes."""

    edges: dict[tuple[int, int], int]
    code: dict[int, bytes]
    flash_reads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))  # byte addresses, in order
    unaligned: dict[tuple[int, int], int] = field(default_factory=dict)  # (access bytes, address % bytes) -> count


def _elf_segments_and_symbols(elf: bytes, where: str) -> tuple[list[tuple[int, bytes]], dict[str, int]]:
    if elf[:5] != b"\x7fELF\x01" or elf[5] != 1:
        raise DataError(f"{where}: not a 32-bit little-endian ELF; give the app.elf that `tinyprec mcu` built")
    phoff, shoff = struct.unpack_from("<II", elf, 28)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", elf, 42)
    segments = []
    for i in range(phnum):
        p_type, off, _vaddr, paddr, filesz = struct.unpack_from("<5I", elf, phoff + i * phentsize)
        if p_type == 1 and filesz:
            segments.append((paddr, elf[off:off + filesz]))  # load address: .data's initial image lies in flash
    sections = [struct.unpack_from("<10I", elf, shoff + i * shentsize) for i in range(shnum)]
    symbols: dict[str, int] = {}
    for sec in sections:
        if sec[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sec[6]][4]
        for j in range(sec[5] // 16):
            name, value = struct.unpack_from("<II", elf, sec[4] + j * 16)
            start = strtab + name
            symbols[elf[start:elf.index(b"\0", start)].decode(errors="replace")] = value
    return segments, symbols


def trace_invokes(elf_path: Path, *, flash_reads: bool = False, unaligned: bool = False, max_invokes: int = 1,
                  run_to_end: bool = False, timeout_s: float = 1800.0) -> tuple[list[InvokeTrace], str]:
    """Run ``elf_path`` (an M4 app built for mps2-an386) under Unicorn; the first ``max_invokes``
    inferences as :class:`InvokeTrace`, and the console text. With ``run_to_end`` the program then runs on
    untraced to its exit (the console then holds the golden-vector verdict). ``unaligned`` counts the
    halfword and word data accesses at unaligned addresses (a Python call per data access: slower)."""
    try:
        from unicorn import (UC_ARCH_ARM, UC_HOOK_BLOCK, UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MODE_MCLASS,
                             UC_MODE_THUMB, Uc)
        from unicorn import arm_const as A
    except ImportError as err:
        raise DataError("the instruction trace needs the Unicorn engine: pip install 'tinyprec[trace]'") from err
    path = Path(elf_path)
    segments, symbols = _elf_segments_and_symbols(path.read_bytes(), str(path))
    if INVOKE_SYMBOL not in symbols:
        raise DataError(f"{path}: no {INVOKE_SYMBOL} symbol; give an unstripped app.elf built by `tinyprec mcu`")
    invoke = symbols[INVOKE_SYMBOL] & ~1
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_M4)
    uc.mem_map(*FLASH)
    uc.mem_map(*RAM)
    for addr, data in segments:
        if not any(lo <= addr and addr + len(data) <= lo + size for lo, size in (FLASH, RAM)):
            raise DataError(f"{path}: a segment at {addr:#x} lies outside the Cortex-M4 board's memory (mps2-an386: "
                            "code at 0, RAM at 0x20000000); the trace runs images built with --target cortex-m4")
        uc.mem_write(addr, data)
    registers: dict[int, int] = {}
    tick = [0xFFFFFF]

    def scs_read(_uc: object, offset: int, _size: int, _ud: object) -> int:
        if offset == _SYST_CVR:  # a falling SysTick count, never 0 (the start-up waits for a non-zero one)
            tick[0] = (tick[0] - 1) & 0xFFFFFF or 0xFFFFFF
            return tick[0]
        return registers.get(offset, 0)

    def scs_write(_uc: object, offset: int, _size: int, value: int, _ud: object) -> None:
        registers[offset] = value

    uc.mmio_map(SCS, 0x1000, scs_read, None, scs_write, None)
    console: list[str] = []

    def c_string(addr: int) -> bytes:
        out = b""
        while True:
            chunk = bytes(uc.mem_read(addr, 64))
            end = chunk.find(b"\0")
            if end >= 0:
                return out + chunk[:end]
            out, addr = out + chunk, addr + 64

    def semihosting(_uc: object, intno: int, _ud: object) -> None:
        pc = uc.reg_read(A.UC_ARM_REG_PC)
        op, arg = uc.reg_read(A.UC_ARM_REG_R0), uc.reg_read(A.UC_ARM_REG_R1)
        if op == _SH_WRITE0:
            console.append(c_string(arg).decode(errors="replace"))
        elif op == _SH_CMDLINE:
            buf = struct.unpack("<I", bytes(uc.mem_read(arg, 4)))[0]
            uc.mem_write(buf, b"app\0")
        elif op in (_SH_EXIT, _SH_EXIT_EXTENDED):
            uc.emu_stop()
            return
        else:
            uc.emu_stop()
            raise DataError(f"{path}: semihosting call {op:#x} (exception {intno}) at {pc:#x} is not served by the trace")
        uc.reg_write(A.UC_ARM_REG_R0, 0)
        uc.reg_write(A.UC_ARM_REG_PC, (pc + 2) | 1)

    uc.hook_add(UC_HOOK_INTR, semihosting)
    traces: list[InvokeTrace] = []
    edges: Counter[tuple[int, int]] = Counter()
    sizes: dict[int, int] = {}
    reads: list[int] = []
    misaligned: Counter[tuple[int, int]] = Counter()
    state = {"prev": 0, "active": False, "ret": -1}

    def block(_uc: object, addr: int, size: int, _ud: object) -> None:
        if state["active"]:
            edges[(state["prev"], addr)] += 1
            sizes[addr] = size
            if addr == state["ret"]:
                state["active"] = False
                edges[(state["prev"], addr)] -= 1  # the return block belongs to the caller
                _close()
        elif addr == invoke and len(traces) < max_invokes:
            state["active"] = True
            state["ret"] = uc.reg_read(A.UC_ARM_REG_LR) & ~1
            edges[(0, addr)] += 1
            sizes[addr] = size
        state["prev"] = addr

    def _close() -> None:
        kept = {k: v for k, v in edges.items() if v}
        code = {a: bytes(uc.mem_read(a, sizes[a])) for _, a in kept}
        traces.append(InvokeTrace(kept, code, np.asarray(reads, np.uint32), dict(misaligned)))
        edges.clear()
        reads.clear()
        misaligned.clear()
        if len(traces) >= max_invokes:
            if not run_to_end:
                uc.emu_stop()
                return
            for handle in hooks:
                uc.hook_del(handle)

    def flash_read(_uc: object, _access: int, addr: int, _size: int, _value: int, _ud: object) -> None:
        if state["active"]:
            reads.append(addr)

    def data_access(_uc: object, _access: int, addr: int, size: int, _value: int, _ud: object) -> None:
        width = min(size, 4)  # LDRD/STRD and multiples need word alignment only
        if state["active"] and width > 1 and addr % width:
            misaligned[(width, addr % width)] += 1

    hooks = [uc.hook_add(UC_HOOK_BLOCK, block)]
    if unaligned:
        for lo, span in (FLASH, RAM):
            hooks.append(uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, data_access, begin=lo, end=lo + span - 1))
    if flash_reads:
        hooks.append(uc.hook_add(UC_HOOK_MEM_READ, flash_read, begin=FLASH[0], end=FLASH[0] + FLASH[1] - 1))
    sp, reset = struct.unpack("<II", bytes(uc.mem_read(0, 8)))
    uc.reg_write(A.UC_ARM_REG_SP, sp)
    start = time.perf_counter()
    uc.emu_start(reset | 1, 0xFFFFFFFF, timeout=int(timeout_s * 1e6))
    if len(traces) < max_invokes:
        raise DataError(f"{path}: {len(traces)} of {max_invokes} inferences traced in {time.perf_counter() - start:.0f} s; "
                        f"console: {''.join(console)[-200:]!r}")
    return traces, "".join(console)


def disassemble(code: dict[int, bytes]) -> dict[int, list[Instr]]:
    """Blocks of Thumb-2 machine code (address -> bytes) as :class:`~tinyprec.mcu.cycles.Instr` lists."""
    try:
        from capstone import CS_ARCH_ARM, CS_MODE_MCLASS, CS_MODE_THUMB, Cs
    except ImportError as err:
        raise DataError("the instruction trace needs capstone: pip install 'tinyprec[trace]'") from err
    md = Cs(CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_MCLASS)
    blocks: dict[int, list[Instr]] = {}
    for addr, data in code.items():
        decoded = list(md.disasm(data, addr))
        if sum(i.size for i in decoded) != len(data):
            raise DataError(f"capstone could not decode the block at {addr:#x} ({len(data)} bytes)")
        blocks[addr] = [Instr.parse(i.mnemonic, i.op_str, i.size) for i in decoded]
    return blocks


def instruction_mix(trace: InvokeTrace) -> InstructionMix:
    """The :class:`~tinyprec.mcu.cycles.InstructionMix` of one traced inference."""
    return mix_from_blocks(disassemble(trace.code), trace.edges, len(trace.flash_reads), trace.unaligned)
