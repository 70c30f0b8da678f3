"""Emulated microcontroller inference: the firmware bundle built for a Cortex-M core, run in QEMU.

:func:`measure` builds the example app (export/firmware/main.cc with the harness) against a TFLM
tree for ``target`` with ``kernels`` (reference or cmsis-nn), runs it on the QEMU board of the core,
checks the golden vectors bit for bit, streams the given samples in and their outputs back, and
measures the image: flash (model, TFLM, rest) from the link map, RAM (.data + .bss, which holds the
arena, + the stack's high-water mark), executed instructions per inference and per op.

:class:`McuOptions` says where the tree is and what to build; :func:`options_from_env` finds a tree
from ``$TINYPREC_TFLM_TREE`` (or the recipe's ``[validate] tflm_tree``) and reports why the runner
is off when there is none or the toolchain is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.errors import DataError, TinyprecError
from tinyprec.mcu.firmware_build import (KERNEL_SETS, TREE_ENV, App, ToolchainMissing, build_app, check_tree,
                                         find_toolchain, get_target, resolve_tree)
from tinyprec.mcu.qemu import ImageSizes, QemuRun, elf_size, image_sizes, run_app

DEFAULT_KERNELS = "cmsis-nn"  # what a product ships; the reference set is one option away


@dataclass
class McuOptions:
    """What the ``mcu`` validation runner builds and where; ``measurement`` is filled by the runner."""

    tree: Path | None = None
    target: str = "cortex-m4"
    kernels: str = DEFAULT_KERNELS
    bundle_dir: Path | None = None  # the run's firmware/ folder; None: a bundle is written from the .tflite
    build_dir: Path | None = None  # where the app builds; None: a temporary folder
    off_reason: str = ""  # why the runner is off (no tree, no toolchain), when tree is None
    measurement: "McuMeasurement | None" = field(default=None, repr=False)


def options_from_env(recipe_tree: str | Path | None = None, *, target: str = "cortex-m4", kernels: str = DEFAULT_KERNELS,
                     bundle_dir: Path | None = None, build_dir: Path | None = None) -> McuOptions:
    """Options with the tree from ``$TINYPREC_TFLM_TREE`` or the recipe, or off with the reason why."""
    target = target.split("@")[0].strip().lower()
    if kernels not in KERNEL_SETS:
        raise DataError(f"[validate] mcu_kernels = '{kernels}': use one of {', '.join(KERNEL_SETS)}")
    try:
        tree = resolve_tree(None, recipe_tree)
    except TinyprecError as err:
        return McuOptions(off_reason=str(err))
    if tree is None:
        return McuOptions(off_reason=f"no TFLM tree: set {TREE_ENV} or [validate] tflm_tree (e.g. ../shared/third_party/tflm)")
    try:
        find_toolchain()
    except ToolchainMissing as err:
        return McuOptions(off_reason=str(err))
    return McuOptions(tree=tree, target=target, kernels=kernels, bundle_dir=bundle_dir, build_dir=build_dir)


@dataclass(frozen=True)
class McuMeasurement:
    """One build + QEMU run of a model on a Cortex-M core, measured."""

    target: str
    board: str
    kernels: str
    samples: int
    outputs: np.ndarray = field(repr=False)
    instructions: np.ndarray = field(repr=False)  # per streamed sample
    golden_count: int
    golden_mismatches: int
    per_op: tuple[tuple[int, str, int], ...]
    profiled_instructions: int
    instructions_per_tick: float
    sizes: ImageSizes
    elf: dict[str, int]
    arena_used_bytes: int
    stack_used_bytes: int
    library_objects: int
    library_compiled: int
    library_seconds: float
    app_seconds: float
    run_seconds: float
    tree: str

    @property
    def golden_passed(self) -> bool:
        return self.golden_mismatches == 0

    @property
    def instructions_per_inference(self) -> int:
        """Median over the streamed samples (the profiled golden invoke when none were streamed)."""
        return int(np.median(self.instructions)) if self.instructions.size else self.profiled_instructions

    @property
    def ram_bytes(self) -> int:
        """.data + .bss (the tensor arena is a static array in .bss) + the stack's high-water mark."""
        return self.sizes.data + self.sizes.bss + self.stack_used_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts (no per-sample outputs)."""
        s = self.sizes
        instr = self.instructions
        return {
            "target": self.target, "board": f"QEMU {self.board}", "kernels": self.kernels, "tree": self.tree,
            "golden": {"count": self.golden_count, "mismatched_elements": self.golden_mismatches, "passed": self.golden_passed},
            "samples": self.samples,
            "instructions": {
                "per_inference": self.instructions_per_inference,
                "min": int(instr.min()) if instr.size else None, "max": int(instr.max()) if instr.size else None,
                "resolution": self.instructions_per_tick,
                "per_op": [{"index": i, "op": tag, "instructions": n} for i, tag, n in self.per_op],
                "label": "measured (QEMU -icount shift=0, SysTick; +/- one tick)",
            },
            "flash": {"total_bytes": s.flash_total, "model_bytes": s.flash_model, "tflm_bytes": s.flash_tflm,
                      "tflm_by_class": dict(s.flash_tflm_by_class), "golden_vectors_bytes": s.flash_golden,
                      "rest_bytes": s.flash_rest,
                      "elf_text_plus_data": self.elf["text"] + self.elf["data"],
                      "label": "measured (linked ELF; rest = start-up, C/C++ runtime, app and QEMU harness)"},
            "ram": {"total_bytes": self.ram_bytes, "data_bytes": s.data, "bss_bytes": s.bss, "arena_bytes": s.arena_bytes,
                    "arena_used_bytes": self.arena_used_bytes, "stack_used_bytes": self.stack_used_bytes,
                    "label": "measured (.data + .bss incl. the arena + stack high-water mark)"},
            "build": {"library_objects": self.library_objects, "library_compiled": self.library_compiled,
                      "library_seconds": round(self.library_seconds, 2), "app_seconds": round(self.app_seconds, 2)},
            "run_seconds": round(self.run_seconds, 3),
        }


def _settings_value(bundle_dir: Path, name: str) -> int:
    text = (bundle_dir / "model_settings.h").read_text()
    m = re.search(rf"constexpr int {name} = (-?\d+);", text)
    if m is None:
        raise DataError(f"{bundle_dir / 'model_settings.h'} has no {name}; re-export the firmware bundle")
    return int(m.group(1))


_C_TYPES = {"int8_t": np.int8, "uint8_t": np.uint8, "int16_t": np.int16, "float": np.float32}


def bundle_io(bundle_dir: Path) -> tuple[tuple[int, ...], np.dtype, tuple[int, ...], np.dtype]:
    """Input/output shapes (without the batch dimension) and element types declared by model_settings.h."""
    text = (Path(bundle_dir) / "model_settings.h").read_text()
    found: list[Any] = []
    for side in ("Input", "Output"):
        shape = re.search(rf"k{side}Shape\[k{side}Dims\] = \{{([^}}]*)\}}", text)
        ctype = re.search(rf"using Model{side}Type = (\w+);", text)
        if shape is None or ctype is None or ctype.group(1) not in _C_TYPES:
            raise DataError(f"{bundle_dir / 'model_settings.h'} does not declare the model's {side.lower()}; re-export it")
        dims = tuple(int(d) for d in shape.group(1).split(","))
        found += [dims[1:], np.dtype(_C_TYPES[ctype.group(1)])]
    return found[0], found[1], found[2], found[3]


def measure(bundle_dir: Path, x: np.ndarray | None, *, tree: Path, target: str = "cortex-m4",
            kernels: str = DEFAULT_KERNELS, build_dir: Path) -> McuMeasurement:
    """Build the app for ``target`` with ``kernels``, run golden vectors + ``x`` (N, ...) in QEMU, measure."""
    if kernels not in KERNEL_SETS:
        raise DataError(f"unknown kernel set '{kernels}'; use one of {', '.join(KERNEL_SETS)}")
    tools = find_toolchain()
    tgt = get_target(target)
    tree = check_tree(Path(tree))
    bundle_dir = Path(bundle_dir)
    in_shape, in_type, out_shape, out_type = bundle_io(bundle_dir)
    if x is not None:
        x = np.asarray(x)
        if tuple(x.shape[1:]) != in_shape and int(np.prod(x.shape[1:])) == int(np.prod(in_shape)):
            x = x.reshape((x.shape[0], *in_shape))
        if tuple(x.shape[1:]) != in_shape or x.dtype != in_type:
            raise DataError(f"samples for the MCU are {x.dtype} {tuple(x.shape[1:])}; the model takes {in_type} {in_shape}")
    app: App = build_app(bundle_dir, Path(build_dir), target=tgt, kernels=kernels, tree=tree, tools=tools)
    run: QemuRun = run_app(app, x, output_shape=out_shape, output_dtype=out_type, tools=tools)
    sizes = image_sizes(app, _settings_value(bundle_dir, "kTensorArenaSize"))
    return McuMeasurement(
        target=tgt.name, board=tgt.board, kernels=kernels, samples=0 if x is None else int(x.shape[0]),
        outputs=run.outputs, instructions=run.instructions, golden_count=run.golden_count,
        golden_mismatches=run.golden_mismatches, per_op=run.per_op, profiled_instructions=run.profiled_instructions,
        instructions_per_tick=run.instructions_per_tick, sizes=sizes, elf=elf_size(tools, app.elf),
        arena_used_bytes=run.arena_used_bytes, stack_used_bytes=run.stack_used_bytes,
        library_objects=len(app.library.objects), library_compiled=app.library.compiled,
        library_seconds=app.library.seconds, app_seconds=app.app_seconds, run_seconds=run.seconds, tree=str(tree))


def write_bundle_for_tflite(tflite_bytes: bytes, out_dir: Path, *, golden: int = 2, seed: int = 0,
                            where: str = "<bytes>") -> Path:
    """A firmware bundle for a .tflite that has none (a foreign model): golden vectors from host TFLM
    on seeded random inputs, arena measured by host TFLM, no preprocessing or class labels."""
    from tinyprec.formats.firmware import write_bundle
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.runtimes.tflm import run_tflm, tflm_arena_bytes

    graph = read_tflite(bytes(tflite_bytes))
    gin = random_inputs(graph.tensors[graph.inputs[0]].shape[1:], graph.tensors[graph.inputs[0]].dtype.numpy, golden, seed)
    gout = run_tflm(bytes(tflite_bytes), gin, where=where)
    write_bundle(graph, bytes(tflite_bytes), Path(out_dir), arena_bytes=tflm_arena_bytes(bytes(tflite_bytes), where=where),
                 preprocess=None, class_labels=(), golden_inputs=gin, golden_outputs=gout)
    return Path(out_dir)


def mcu_arena_bytes(tflite_bytes: bytes, opts: McuOptions, work: Path, *, where: str = "<bytes>") -> int:
    """TFLM's arena as used on the emulated core of ``opts`` (its kernels, 32-bit pointers): the file built
    into the example app and run on one golden vector in QEMU (checked bit for bit)."""
    if opts.tree is None:
        raise TinyprecError(f"{where}: no emulated Cortex-M: {opts.off_reason}")
    bundle = write_bundle_for_tflite(tflite_bytes, Path(work) / "bundle", golden=1, where=where)
    m = measure(bundle, None, tree=opts.tree, target=opts.target, kernels=opts.kernels, build_dir=Path(work) / "build")
    if not m.golden_passed:
        raise TinyprecError(f"{where}: the golden vector differs on the emulated {opts.target} ({opts.kernels} kernels)")
    return int(m.arena_used_bytes)


def random_inputs(shape: tuple[int, ...], dtype: Any, n: int, seed: int) -> np.ndarray:
    """``n`` seeded inputs over the whole range of an integer type (standard normal for float)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, int(info.max) + 1, size=(n, *shape), dtype=dt)
    return rng.standard_normal((n, *shape)).astype(dt)


@dataclass(frozen=True)
class HostComparison:
    """The emulated MCU's outputs against host TFLM's, sample by sample and element by element."""

    samples: int
    identical_samples: int
    differing_elements: int
    max_abs_diff: int
    first_differing_sample: int | None

    @property
    def identical(self) -> bool:
        return self.identical_samples == self.samples


def compare_with_host(tflite_bytes: bytes, x: np.ndarray, mcu_outputs: np.ndarray, *, where: str = "<bytes>") -> HostComparison:
    """Run ``x`` through host TFLM (reference kernels) and compare with the MCU's outputs exactly."""
    from tinyprec.runtimes.tflm import run_tflm

    host = run_tflm(bytes(tflite_bytes), x, where=where).reshape(mcu_outputs.shape)
    diff = np.abs(host.astype(np.int64) - mcu_outputs.astype(np.int64)).reshape(len(host), -1)
    bad = np.flatnonzero(diff.max(axis=1) > 0) if diff.size else np.zeros(0, int)
    return HostComparison(int(len(host)), int(len(host) - len(bad)), int((diff > 0).sum()),
                          int(diff.max(initial=0)), int(bad[0]) if len(bad) else None)


def mcu_runner_outputs(models: Any, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The ``mcu`` validation runner: outputs of the firmware on the emulated core for ``x``, and a note.

    ``models.mcu`` (:class:`McuOptions`) says what to build; when absent the tree comes from
    ``$TINYPREC_TFLM_TREE``. Returns ``(None, reason)`` when the runner is off. The measurement is kept
    on the options (``models.mcu.measurement``) for the report's measured resources.
    """
    import tempfile

    opts: McuOptions = models.mcu if models.mcu is not None else options_from_env()
    if opts.tree is None:
        return None, opts.off_reason or "no TFLM tree"
    if opts.target not in _qemu_targets():
        return None, f"no QEMU board for target '{opts.target}'; the mcu runner emulates {', '.join(_qemu_targets())}"
    with tempfile.TemporaryDirectory(prefix="tinyprec-mcu-") as tmp:
        bundle = opts.bundle_dir
        if bundle is None or not (Path(bundle) / "op_resolver.h").is_file():
            bundle = write_bundle_for_tflite(models.tflite, Path(tmp) / "bundle", where=models.where)
        build = Path(opts.build_dir) / f"{opts.target}-{opts.kernels}" if opts.build_dir is not None else Path(tmp) / "build"
        m = measure(Path(bundle), x, tree=opts.tree, target=opts.target, kernels=opts.kernels, build_dir=build)
    opts.measurement = m
    if opts.bundle_dir is not None and Path(bundle) == Path(opts.bundle_dir) and (Path(bundle).parent / "manifest.json").is_file():
        record_in_manifest(Path(bundle).parent, m)
    golden = "golden vectors PASS" if m.golden_passed else f"golden vectors FAIL ({m.golden_mismatches} elements)"
    return m.outputs, (f"{m.target} on QEMU {m.board}, {m.kernels} kernels; {golden}; "
                       f"{m.instructions_per_inference:,} instructions/inference (measured)")


def _qemu_targets() -> tuple[str, ...]:
    from tinyprec.mcu.firmware_build import TARGETS

    return tuple(TARGETS)


def measured_resources(opts: McuOptions | None) -> dict[str, Any] | None:
    """The report's measured block (flash, RAM, instructions, latency from instructions) or None."""
    if opts is None or opts.measurement is None:
        return None
    from tinyprec.mcu.latency import estimate_from_instructions

    m = opts.measurement
    doc = m.as_dict()
    doc["latency_estimate"] = estimate_from_instructions(m.instructions_per_inference, m.target, m.kernels)
    return doc


def record_in_manifest(run_dir: Path, m: McuMeasurement) -> None:
    """Add the measurement's headline figures to run_dir/manifest.json under ``mcu_measured``."""
    from tinyprec import manifest

    doc = manifest.load(Path(run_dir)).get("mcu_measured") or {}
    d = m.as_dict()
    doc[f"{m.target}/{m.kernels}"] = {
        "board": d["board"], "golden_passed": m.golden_passed, "instructions_per_inference": m.instructions_per_inference,
        "flash_bytes": d["flash"]["total_bytes"], "flash_model_bytes": d["flash"]["model_bytes"],
        "flash_tflm_bytes": d["flash"]["tflm_bytes"], "flash_rest_bytes": d["flash"]["rest_bytes"],
        "ram_bytes": d["ram"]["total_bytes"], "arena_used_bytes": m.arena_used_bytes,
        "stack_used_bytes": m.stack_used_bytes, "label": "measured (linked ELF + QEMU run)"}
    manifest.record(Path(run_dir), {}, {"mcu_measured": doc})


@dataclass(frozen=True)
class OpDiff:
    """One op's output on the emulated core against host TFLM's, for one sample."""

    index: int
    op: str
    tensor: str
    differing_elements: int
    max_abs_diff: int


def diff_by_op(bundle_dir: Path, tflite_bytes: bytes, x_one: np.ndarray, *, tree: Path, target: str, kernels: str,
               build_dir: Path) -> list[OpDiff]:
    """Every op's output tensor for one sample (N=1 batch) on the emulated core vs host TFLM, in execution order.

    Builds a debug variant of the app whose second interpreter preserves all tensors and dumps them; the
    first entry with ``differing_elements > 0`` is the op where the two part.
    """
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    from tinyprec.mcu.firmware_build import build_app
    from tinyprec.mcu.qemu import run_dump
    from tinyprec.runtimes.tflm import model_tensors, run_tflm_with_taps

    tensors = model_tensors(bytes(tflite_bytes))
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    sub = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    activations = sum(int(np.prod(t.shape or (1,))) * 4 for t in tensors if not t.is_const)
    arena = _settings_value(Path(bundle_dir), "kTensorArenaSize") + activations + 8192
    app = build_app(Path(bundle_dir), Path(build_dir), target=target, kernels=kernels, tree=Path(tree),
                    defines=(f"TINYPREC_DUMP_TENSORS={len(tensors)}", f"TINYPREC_DUMP_ARENA={arena}"))
    in_shape = bundle_io(Path(bundle_dir))[0]
    x1 = np.asarray(x_one).reshape((1, *in_shape))
    dumped = run_dump(app, x1)
    host = run_tflm_with_taps(bytes(tflite_bytes), x1, names=[str(t.index) for t in tensors])
    rows = []
    for k, op in enumerate(sub.operators or []):
        oc = model.operatorCodes[op.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        out = int(op.outputs[0])
        ref = host.get(str(out))
        got = dumped.get(out)
        if ref is None or got is None:
            continue
        mine = np.frombuffer(got, dtype=ref.dtype)
        theirs = ref.reshape(-1)
        if mine.size != theirs.size:
            continue
        diff = np.abs(mine.astype(np.int64) - theirs.astype(np.int64)) if ref.dtype.kind in "iu" else np.abs(mine - theirs)
        rows.append(OpDiff(k, names.get(code, str(code)), tensors[out].name, int((diff != 0).sum()), int(diff.max(initial=0))))
    return rows
