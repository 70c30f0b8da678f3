"""Cortex-M4 cycles of an executed instruction stream, from the processor's documented instruction timings.

The Cortex-M4 Technical Reference Manual (ARM DDI 0439, "Instruction set summary" and "Load/store
timings") gives cycles per instruction class on zero-wait-state memory:

- data processing, shifts, moves, bit fields, extends, saturation, SIMD add/subtract, IT: 1
  (IT folds into a preceding 16-bit instruction: 0);
- multiplies and multiply-accumulates, 32- and 64-bit, incl. the DSP ones (SMLAD, SMLABB, SMLAL, ...): 1
  (the M4's single-cycle MAC unit; MLA/MLS kept as their own class);
- SDIV/UDIV: 2-12 (data dependent; 7 is used);
- single loads (LDR, LDRB, ..., VLDR): 2, but 1 when pipelined behind a preceding single load whose
  result is not the address of this one; single stores: 1 with an immediate offset, 2 with a register
  offset (1 behind a load); an address register written by the preceding data-processing instruction
  adds 1 (no forwarding path); LDRD/STRD: 3, never pipelined;
- load/store multiple (LDM, STM, PUSH, POP, VLDM, VSTM, VPUSH, VPOP): 1 + N registers;
- branches: 1 not taken, 1 + P taken; TBB/TBH 2 + P; any write of the PC adds P;
- FPU: VADD/VSUB/VMUL/VCVT/VMOV/VCMP 1, VMOV to/from two core registers 2, VMLA/VMLS/VFMA/VFMS/
  VNMLA/VNMLS 3, VDIV/VSQRT 14;
- unaligned data accesses: a halfword at an odd address or a word at 2 mod 4 adds 1, a word at 1 or 3
  mod 4 adds 2 (:func:`unaligned_cycles`; the trace counts them).

P, the pipeline refill after a taken branch, is 1-3 cycles on zero-wait memory and longer when the
target must come from flash with wait states: it is left as a parameter. So is the extra cost of data
reads from flash (wait states the flash accelerator's cache does not hide). An instruction is classified
from its assembly text (mnemonic, operands, byte size), as capstone or objdump print it, so the tables
here need no disassembler.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Instruction classes and their documented cost in cycles (without P or memory wait states).
CLASS_CYCLES: dict[str, float] = {
    "alu": 1.0, "it": 1.0, "mul": 1.0, "mla": 1.0, "div": 7.0,
    "load": 2.0, "store": 2.0, "load_dual": 3.0, "store_dual": 3.0,
    "load_multiple": 1.0, "store_multiple": 1.0,  # + 1 per register, counted apart
    "branch": 1.0, "table_branch": 2.0,
    "fp": 1.0, "fp_mac": 3.0, "fp_div": 14.0, "barrier": 3.0,
}

_CONDS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al")
_EXACT: dict[str, str] = {
    **{m: "load" for m in ("ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrex", "ldrexb", "ldrexh", "ldrt", "ldrbt",
                            "ldrht", "ldrsbt", "ldrsht", "vldr")},
    **{m: "store" for m in ("str", "strb", "strh", "strex", "strexb", "strexh", "strt", "strbt", "strht", "vstr")},
    "ldrd": "load_dual", "strd": "store_dual",
    **{m: "load_multiple" for m in ("ldm", "ldmia", "ldmfd", "ldmdb", "pop", "vldmia", "vldmdb", "vpop", "vldm")},
    **{m: "store_multiple" for m in ("stm", "stmia", "stmea", "stmdb", "stmfd", "push", "vstmia", "vstmdb", "vpush", "vstm")},
    **{m: "branch" for m in ("b", "bl", "bx", "blx", "cbz", "cbnz")},
    "tbb": "table_branch", "tbh": "table_branch",
    "mul": "mul", "mla": "mla", "mls": "mla", "sdiv": "div", "udiv": "div",
    **{m: "fp_mac" for m in ("vmla", "vmls", "vfma", "vfms", "vnmla", "vnmls", "vfnma", "vfnms")},
    "vdiv": "fp_div", "vsqrt": "fp_div",
    **{m: "barrier" for m in ("dsb", "dmb", "isb")},
}
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(sml[as]l?d?x?|smla[bt][bt]|smlaw[bt]|smlal[bt][bt]|smmla|smmls|smmul|smul[bt][bt]|smulw[bt]|"
                r"smu[as]dx?|smull|umull|smlal|umlal|umaal|smmlar|smmlsr|smmulr)$"), "mul"),
    (re.compile(r"^it[te]{0,3}$"), "it"),
    (re.compile(r"^v[a-z0-9]+$"), "fp"),
)
_WIDTH = re.compile(r"\.(w|n)$")
_REG = re.compile(r"\b(r1[0-5]|r[0-9]|sb|sl|fp|ip|sp|lr|pc)\b")
_ALIAS = {"sb": "r9", "sl": "r10", "fp": "r11", "ip": "r12", "r13": "sp", "r14": "lr", "r15": "pc"}


def _base(mnemonic: str) -> tuple[str, str, bool]:
    """(bare mnemonic, class, conditional) of e.g. ``addmi``, ``ldr.w``, ``bne.w``, ``vmov.f32``, ``cbz``."""
    m = _WIDTH.sub("", mnemonic.lower())
    if m.startswith("v"):
        m = m.split(".")[0]
    candidates = [(m, False)]
    if m[-2:] in _CONDS and len(m) > 2:
        candidates.append((m[:-2], True))
    candidates += [(c[:-1], cond) for c, cond in list(candidates) if c.endswith("s") and len(c) > 1]
    for c, cond in candidates:
        if c in _EXACT:
            return c, _EXACT[c], cond or c in ("cbz", "cbnz")
        for pattern, cls in _FAMILIES:
            if pattern.match(c):
                return c, cls, cond
    return m, "alu", False


def _regs(text: str) -> list[str]:
    return [_ALIAS.get(r, r) for r in _REG.findall(text.lower())]


@dataclass(frozen=True)
class Instr:
    """One instruction as cycle accounting needs it, parsed from its assembly text."""

    mnemonic: str
    cls: str
    size: int
    dest: tuple[str, ...]  # registers written (first operand; the list of a load multiple)
    address_regs: tuple[str, ...]  # base/index registers of a memory operand
    list_regs: int  # registers transferred by a load/store multiple
    immediate_offset: bool  # a store with [Rn], [Rn, #imm] or a pre/post-indexed immediate
    writes_pc: bool
    conditional: bool = False

    @staticmethod
    def parse(mnemonic: str, operands: str, size: int) -> Instr:
        """Parse e.g. ``Instr.parse("ldr.w", "r3, [r1], #4", 4)``.

        >>> Instr.parse("ldr.w", "r3, [r1], #4", 4).cls, Instr.parse("pop", "{r4, r5, pc}", 2).list_regs
        ('load', 3)
        """
        base, cls, conditional = _base(mnemonic)
        ops = operands.lower()
        mem = re.search(r"\[([^\]]*)\]", ops)
        address = tuple(_regs(mem.group(1))) if mem else ()
        listed = re.search(r"\{([^}]*)\}", ops)
        count = 0
        dest: tuple[str, ...] = ()
        if listed:
            for item in listed.group(1).split(","):
                bounds = re.findall(r"[0-9]+", item)
                n = int(bounds[-1]) - int(bounds[0]) + 1 if "-" in item and len(bounds) == 2 else 1
                count += 2 * n if item.strip().startswith("d") else n
            dest = tuple(_regs(listed.group(1))) if cls == "load_multiple" else ()
        elif cls not in ("store", "store_dual", "branch", "table_branch"):
            dest = tuple(_regs(ops.split(",")[0]))
        immediate = cls == "store" and mem is not None and not re.search(r"\[\s*\w+\s*,\s*(r[0-9]|sb|sl|fp|ip|lr)", ops)
        writes_pc = "pc" in dest or cls in ("branch", "table_branch")
        return Instr(base, cls, size, dest, address, count, immediate, writes_pc, conditional)


@dataclass(frozen=True)
class BlockCost:
    """Fixed cycles of a straight-line block, its instruction count by class, and how it ends."""

    cycles: float
    instructions: int
    by_class: Mapping[str, int]
    refills: int  # writes of the PC before the last instruction (none where blocks end at branches)
    ends_in_branch: bool  # the last instruction writes the PC: a refill when the next block is not the fall-through
    end_address: int


def block_cost(instrs: Sequence[Instr], address: int = 0) -> BlockCost:
    """Documented cycles of ``instrs`` executed in order (no P, no wait states). The refill of the last
    instruction is left to the caller, who knows whether the branch was taken."""
    cycles = 0.0
    by_class: Counter[str] = Counter()
    refills = 0
    prev: Instr | None = None
    for i, ins in enumerate(instrs):
        c = CLASS_CYCLES[ins.cls]
        if ins.cls in ("load_multiple", "store_multiple"):
            c += ins.list_regs
        elif ins.cls == "it" and prev is not None and prev.size == 2:
            c = 0.0  # folded onto the preceding 16-bit instruction
        elif ins.cls in ("load", "store"):
            after_load = prev is not None and prev.cls == "load" and not set(prev.dest) & set(ins.address_regs)
            if after_load or (ins.cls == "store" and ins.immediate_offset):
                c = 1.0
        if ins.cls in ("load", "store", "load_dual", "store_dual", "load_multiple", "store_multiple") and prev is not None \
                and prev.cls in ("alu", "mul", "mla") and set(prev.dest) & set(ins.address_regs):
            c += 1.0  # address generation waits for the register bank
        cycles += c
        by_class[ins.cls] += 1
        if ins.writes_pc and i < len(instrs) - 1:
            refills += 1
        prev = ins
    last = instrs[-1] if instrs else None
    ends_in_branch = last is not None and last.writes_pc
    return BlockCost(cycles, len(instrs), dict(by_class), refills, ends_in_branch, address + sum(x.size for x in instrs))


def unaligned_cycles(counts: Mapping[tuple[int, int], int]) -> float:
    """Extra cycles of unaligned accesses, ``(access bytes, address % bytes) -> count``.

    >>> unaligned_cycles({(2, 1): 10, (4, 2): 5, (4, 3): 1})
    17.0
    """
    return float(sum(n * (2 if width == 4 and offset % 2 else 1) for (width, offset), n in counts.items() if offset))


@dataclass(frozen=True)
class InstructionMix:
    """One inference: instructions by class, their documented cycles (:data:`CLASS_CYCLES`, no P, no wait
    states; with the unaligned-access penalties where the trace counted them), pipeline refills (taken
    branches, other PC writes), executed code bytes (what the core fetched) and data reads from flash
    (weights, literal pools; where the trace recorded them)."""

    instructions: int
    by_class: Mapping[str, int]
    base_cycles: float
    refills: int
    code_bytes: int
    flash_reads: int = 0
    unaligned_accesses: int = 0

    def cycles(self, refill: float = 2.0) -> float:
        """Documented cycles on zero-wait-state memory with a refill penalty P of ``refill`` cycles.

        >>> InstructionMix(3, {"alu": 2, "branch": 1}, 3.0, 1, 8).cycles(2.0)
        5.0
        """
        return self.base_cycles + refill * self.refills

    def as_dict(self) -> dict[str, object]:
        return {"instructions": self.instructions, "by_class": dict(self.by_class), "base_cycles": self.base_cycles,
                "refills": self.refills, "code_bytes": self.code_bytes, "flash_reads": self.flash_reads,
                "unaligned_accesses": self.unaligned_accesses}


def mix_from_blocks(blocks: Mapping[int, Sequence[Instr]], edges: Mapping[tuple[int, int], int],
                    flash_reads: int = 0, unaligned: Mapping[tuple[int, int], int] | None = None) -> InstructionMix:
    """Sum block costs over the executed ``edges`` ((from block, to block) -> count; from 0 = entry); a
    block's final branch counts as taken when the next block is not its fall-through."""
    costs = {a: block_cost(ins, a) for a, ins in blocks.items()}
    by_class: Counter[str] = Counter()
    base = 0.0
    refills = instructions = code_bytes = 0
    for (src, dst), n in edges.items():
        c = costs[dst]
        base += n * c.cycles
        instructions += n * c.instructions
        code_bytes += n * sum(i.size for i in blocks[dst])
        refills += n * c.refills
        for k, v in c.by_class.items():
            by_class[k] += n * v
        s = costs.get(src)
        if s is not None and s.ends_in_branch and dst != s.end_address:
            refills += n
    misaligned = dict(unaligned or {})
    return InstructionMix(instructions, dict(by_class), base + unaligned_cycles(misaligned), refills, code_bytes,
                          flash_reads, sum(n for (_, offset), n in misaligned.items() if offset))
