"""Run a firmware image in qemu-system-arm and read back what it measured; measure the linked ELF.

The image is the example app built with the harness (:mod:`tinyprec.mcu.firmware_build`). QEMU runs
with ``-icount shift=0`` (the virtual clock advances exactly 1 ns per executed instruction) and Arm
semihosting (console, command line, input/output files). The app's SysTick counts the core clock
of the board model; a calibration loop of a known instruction count at start-up gives instructions
per tick (40 on the MPS2 boards' 25 MHz clock), so counts are exact to one tick (±40 instructions).

Flash and RAM come from the linker map: every input section placed in a flash-resident output
section is attributed to the model (model_data.o), TFLM (the library archive: core, kernels,
CMSIS-NN), the golden vectors, or the rest (start-up, C/C++ runtime, the app and its harness).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyprec.errors import DataError
from tinyprec.mcu.firmware_build import App, Toolchain, find_toolchain

FLASH_SECTIONS = (".vectors", ".text", ".ARM.extab", ".ARM.exidx", ".preinit_array", ".init_array", ".fini_array", ".data")
_EXIT_MEANING = {1: "setup failed (schema, resolver or AllocateTensors)", 2: "golden vectors differ",
                 3: "the core faulted", 4: "sample streaming failed"}


@dataclass(frozen=True)
class QemuRun:
    """What one QEMU run of the app reported."""

    outputs: np.ndarray  # (N, *output shape), the model's output type
    instructions: np.ndarray  # (N,) executed instructions per Invoke (±instructions_per_tick)
    instructions_per_tick: float
    golden_count: int
    golden_mismatches: int
    arena_used_bytes: int
    arena_bytes: int
    stack_used_bytes: int
    stack_bytes: int
    per_op: tuple[tuple[int, str, int], ...]  # (index, TFLM op name, instructions), from golden vector 0
    profiled_instructions: int
    exit_code: int
    seconds: float
    console: str = field(repr=False)


def _facts(console: str) -> dict[str, list[list[str]]]:
    facts: dict[str, list[list[str]]] = {}
    for line in console.splitlines():
        if line.startswith("tinyprec: "):
            key, *values = line[len("tinyprec: "):].split()
            facts.setdefault(key, []).append(values)
    return facts


def _launch(app: App, tools: Toolchain, work: Path, args: list[str], limit: float) -> tuple[str, dict[str, list[list[str]]], int, float]:
    """Run the image in QEMU in ``work``; (console text, its tinyprec facts, exit code, seconds)."""
    cmd = [tools.qemu, "-M", app.target.board, "-nographic", "-monitor", "none", "-serial", "none",
           "-icount", "shift=0", "-chardev", "file,id=console,path=console.txt",
           "-semihosting-config", "enable=on,target=native,chardev=console," + ",".join(f"arg={a}" for a in args),
           "-kernel", str(Path(app.elf).resolve())]  # QEMU runs in work/: an absolute path
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as err:
        raise DataError(f"QEMU ({app.target.board}) did not finish within {limit:.0f} s; "
                        "give fewer samples or a longer timeout") from err
    seconds = time.perf_counter() - start
    console_file = work / "console.txt"
    console = console_file.read_text(errors="replace") if console_file.is_file() else ""
    facts = _facts(console)
    if "calibration" not in facts or "golden" not in facts:
        last = (console.strip().splitlines() or proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"the firmware did not run on QEMU {app.target.board} (exit {proc.returncode}, "
                        f"{_EXIT_MEANING.get(proc.returncode, 'unknown')}): {last}")
    return console, facts, proc.returncode, seconds


def run_dump(app: App, x_one: np.ndarray, *, tools: Toolchain | None = None, timeout_s: float = 300.0) -> dict[int, bytes]:
    """Run a tensor-dump build (TINYPREC_DUMP_TENSORS) on one sample: tensor index -> its bytes."""
    tools = tools or find_toolchain()
    with tempfile.TemporaryDirectory(prefix="qemu-dump-", dir=app.build_dir) as tmp:
        work = Path(tmp)
        np.ascontiguousarray(x_one).tofile(work / "in.bin")
        _, facts, rc, _ = _launch(app, tools, work, ["app", "in.bin", "dump.bin", "ticks.bin"], timeout_s)
        if int(facts.get("samples", [["-1"]])[-1][0]) != 1:
            raise DataError(f"the tensor-dump build failed on QEMU {app.target.board} (exit {rc})")
        blob = (work / "dump.bin").read_bytes()
    tensors: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(blob):
        index, size = np.frombuffer(blob[pos:pos + 8], "<u4")
        tensors[int(index)] = blob[pos + 8:pos + 8 + int(size)]
        pos += 8 + int(size)
    return tensors


def run_app(app: App, inputs: np.ndarray | None, *, output_shape: tuple[int, ...], output_dtype: np.dtype,
            tools: Toolchain | None = None, timeout_s: float | None = None) -> QemuRun:
    """Run ``app`` in QEMU: golden vectors, then every sample of ``inputs`` (N, ...) streamed in."""
    tools = tools or find_toolchain()
    x = np.zeros((0,), np.int8) if inputs is None else np.ascontiguousarray(inputs)
    n = 0 if inputs is None else int(x.shape[0])
    with tempfile.TemporaryDirectory(prefix="qemu-", dir=app.build_dir) as tmp:
        work = Path(tmp)
        args = ["app"]
        if n:
            x.tofile(work / "in.bin")
            args += ["in.bin", "out.bin", "ticks.bin"]
        limit = timeout_s if timeout_s is not None else 120.0 + 10.0 * n
        console, facts, returncode, seconds = _launch(app, tools, work, args, limit)
        streamed = int(facts.get("samples", [["-1"]])[-1][0])
        if n and streamed != n:
            raise DataError(f"the firmware streamed {streamed} of {n} samples on QEMU {app.target.board}: "
                            f"{_EXIT_MEANING.get(returncode, '')}")
        out_elems = int(np.prod(output_shape))
        if n:
            outputs = np.fromfile(work / "out.bin", dtype=output_dtype).reshape((n, *output_shape))
            ticks = np.fromfile(work / "ticks.bin", dtype="<u8").astype(np.int64)
        else:
            outputs = np.zeros((0, *output_shape), output_dtype)
            ticks = np.zeros((0,), np.int64)
        assert outputs.size == n * out_elems
    cal_instr, cal_ticks = (int(v) for v in facts["calibration"][0])
    ratio = cal_instr / cal_ticks
    if abs(ratio - round(ratio)) < 0.01:
        ratio = float(round(ratio))
    golden = [int(v) for v in facts["golden"][0]]
    arena = [int(v) for v in facts["arena"][0]]
    stack = [int(v) for v in facts.get("stack", [["0", "0"]])[0]]
    per_op = tuple((int(i), tag, int(round(int(t) * ratio))) for i, tag, t in facts.get("op", []))
    profiled = int(round(int(facts["profiled_invoke"][0][0]) * ratio)) if "profiled_invoke" in facts else 0
    return QemuRun(outputs, np.rint(ticks * ratio).astype(np.int64), ratio, golden[0], golden[1], arena[0], arena[1],
                   stack[0], stack[1], per_op, profiled, returncode, seconds, console)


@dataclass(frozen=True)
class ImageSizes:
    """Flash and static RAM of the linked image, split by origin (bytes)."""

    flash_model: int
    flash_tflm: int
    flash_golden: int  # the golden vectors the test app checks (not part of a product image)
    flash_rest: int
    flash_tflm_by_class: Mapping[str, int]
    data: int
    bss: int
    arena_bytes: int

    @property
    def flash_total(self) -> int:
        return self.flash_model + self.flash_tflm + self.flash_golden + self.flash_rest


_OUT = re.compile(r"^(\.[^\s]+)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+))?")
_IN_FULL = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*(.*)$")
_IN_NAME = re.compile(r"^ (\S+)$")
_IN_CONT = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")


def _map_sections(map_text: str) -> list[tuple[str, int, str, str]]:
    """(output section, bytes, origin file, input section) for every input section in the link map.

    Merged string sections (``.rodata.*.str1.1``) overlap in the map (it lists their sizes before
    merging); each byte is attributed once, to the first section that covers it.
    """
    text = map_text.split("Linker script and memory map", 1)[-1]
    raw: list[tuple[str, int, int, str, str]] = []
    current = ""
    pending: str | None = None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            m = _OUT.match(line)
            current = m.group(1) if m else ""
            pending = None
            continue
        if pending is not None:
            m = _IN_CONT.match(line)
            if m:
                raw.append((current, int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip(), pending))
            pending = None
            continue
        m = _IN_FULL.match(line)
        if m and not m.group(1).startswith("0x"):
            raw.append((current, int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip(), m.group(1)))
            continue
        m = _IN_NAME.match(line)
        if m and m.group(1).startswith((".", "COMMON")):
            pending = m.group(1)
    rows: list[tuple[str, int, str, str]] = []
    covered: dict[str, int] = {}
    for section, addr, size, origin, name in sorted(raw, key=lambda r: (r[0], r[1], -r[2])):
        start = max(addr, covered.get(section, 0))
        end = addr + size
        if end > start:
            rows.append((section, end - start, origin, name))
            covered[section] = end
    return rows


def image_sizes(app: App, arena_bytes: int) -> ImageSizes:
    """Flash (model / TFLM / rest) and static RAM (.data, .bss) of ``app`` from its link map."""
    classes = {obj.name: cls for obj, cls in app.library.objects}
    flash = {"model": 0, "tflm": 0, "golden": 0, "rest": 0}
    by_class: dict[str, int] = {}
    data = bss = 0
    for section, size, origin, name in _map_sections(app.map_file.read_text()):
        if section == ".bss":
            bss += size
        if section == ".data":
            data += size
        if section not in FLASH_SECTIONS:
            continue
        m = re.search(r"libtflm\.a\(([^)]+)\)", origin)
        if m:
            flash["tflm"] += size
            cls = classes.get(m.group(1), "core")
            by_class[cls] = by_class.get(cls, 0) + size
        elif origin.endswith("model_data.o"):
            flash["model"] += size
        elif "kGolden" in name:
            flash["golden"] += size
        else:
            flash["rest"] += size
    return ImageSizes(flash["model"], flash["tflm"], flash["golden"], flash["rest"], by_class, data, bss, arena_bytes)


def elf_size(tools: Toolchain, elf: Path) -> dict[str, int]:
    """``arm-none-eabi-size`` (Berkeley): text, data, bss of the image, for a cross-check of the map split."""
    out = subprocess.run([tools.size, str(elf)], capture_output=True, text=True, check=True).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}
