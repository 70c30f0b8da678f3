"""Build the firmware bundle and the example application for a Cortex-M core with a TFLM source tree.

The TFLM tree is used where it lies (read-only): a standalone tree with ``tflm_sources.mk`` (the
library's source lists as TFLM's Makefile prints them), as ``create_tflm_tree.py`` writes one. Flags
follow TFLM's ``cortex_m_generic`` target: ``-mcpu=<core> -mfpu=<fpu> -mfloat-abi=hard``, core sources
``-Os``, kernels and CMSIS-NN ``-O2``, ``-DTF_LITE_STATIC_MEMORY``, plus ``-DNDEBUG`` (a release build:
TFLM's DCHECKs off; error strings stay, so MicroPrintf still talks).

Library objects are compiled only for what the model needs (the core, and the kernels of the ops
in its resolver) and cached one object per source under ``~/.cache/tinyprec/tflm/<key>/`` (or
``$TINYPREC_CACHE``), the key hashing the tree's content, the target, the kernel set, the flags and
the compiler version; a later model with other ops compiles only the kernels not built yet. The app
(main.cc, the bundle, start-up code) builds into the given folder and links bare-metal for the QEMU
board of the target.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tinyprec.errors import DataError
from tinyprec.ir.ops import OpType
from tinyprec.mcu.toolchain import (DEBIAN_PACKAGES, TARGETS, TREE_ENV, Target, Toolchain, ToolchainMissing, check_tree,
                                    find_toolchain, get_target, missing_toolchain_message, resolve_tree, source_lists,
                                    toolchain_available, tree_fingerprint)

__all__ = ["DEBIAN_PACKAGES", "TARGETS", "TREE_ENV", "Target", "Toolchain", "ToolchainMissing", "check_tree",
           "find_toolchain", "get_target", "missing_toolchain_message", "resolve_tree", "toolchain_available",
           "KERNEL_SETS", "OP_KERNELS", "Library", "App", "build_library", "build_app", "library_sources",
           "bundle_ops", "compile_flags", "cache_root", "library_key", "firmware_dir", "linker_script"]

KERNEL_SETS = ("reference", "cmsis-nn")
STACK_BYTES = 32 * 1024
HEAP_BYTES = 4 * 1024


_K = "tensorflow/lite/micro/kernels/"
# op -> kernel sources for the reference set; the CMSIS-NN set swaps in cmsis_nn/<file> where TFLM has one.
OP_KERNELS: dict[OpType, tuple[str, ...]] = {
    OpType.CONV_2D: ("conv.cc", "conv_common.cc"),
    OpType.DEPTHWISE_CONV_2D: ("depthwise_conv.cc", "depthwise_conv_common.cc", "conv_common.cc"),  # kConvInputTensor
    OpType.FULLY_CONNECTED: ("fully_connected.cc", "fully_connected_common.cc"),
    OpType.ADD: ("add.cc", "add_common.cc"),
    OpType.MUL: ("mul.cc", "mul_common.cc"),
    OpType.AVERAGE_POOL_2D: ("pooling.cc", "pooling_common.cc"),
    OpType.MAX_POOL_2D: ("pooling.cc", "pooling_common.cc"),
    OpType.MEAN: ("reduce.cc", "reduce_common.cc"),
    OpType.RESHAPE: ("reshape.cc", "reshape_common.cc"),
    OpType.CONCATENATION: ("concatenation.cc",),
    OpType.PAD: ("pad.cc", "pad_common.cc"),
    OpType.SOFTMAX: ("softmax.cc", "softmax_common.cc"),
    OpType.LOGISTIC: ("logistic.cc", "logistic_common.cc"),
    OpType.TANH: ("tanh.cc", "activations_common.cc"),
    OpType.QUANTIZE: ("quantize.cc", "quantize_common.cc"),
    OpType.DEQUANTIZE: ("dequantize.cc", "dequantize_common.cc"),
    # issue 11's shape ops
    OpType.RESIZE_NEAREST_NEIGHBOR: ("resize_nearest_neighbor.cc",),
    OpType.RESIZE_BILINEAR: ("resize_bilinear.cc",),
    OpType.TRANSPOSE_CONV: ("transpose_conv.cc",),  # cmsis_nn/transpose_conv.cc in the CMSIS-NN set
    OpType.DEPTH_TO_SPACE: ("depth_to_space.cc",),
    OpType.BATCH_MATMUL: ("batch_matmul.cc", "batch_matmul_common.cc"),  # cmsis_nn/batch_matmul.cc in CMSIS-NN
    OpType.ELU: ("elu.cc",),  # issue 11 (ops-act)
    OpType.REDUCE_MAX: ("reduce.cc", "reduce_common.cc"),
    OpType.HARD_SWISH: ("hard_swish.cc", "hard_swish_common.cc"),
    OpType.LEAKY_RELU: ("leaky_relu.cc", "leaky_relu_common.cc"),
    OpType.PRELU: ("prelu.cc", "prelu_common.cc"),
    OpType.SUB: ("sub.cc", "sub_common.cc"),
    OpType.ABS: ("elementwise.cc",),
    OpType.MAXIMUM: ("maximum_minimum.cc",),  # cmsis_nn/maximum_minimum.cc in the CMSIS-NN set
    OpType.MINIMUM: ("maximum_minimum.cc",),
    OpType.TRANSPOSE: ("transpose.cc", "transpose_common.cc"),  # cmsis_nn/transpose.cc in the CMSIS-NN set
    OpType.STRIDED_SLICE: ("strided_slice.cc", "strided_slice_common.cc"),
    OpType.RSQRT: ("elementwise.cc",),  # issue 11 (LayerNorm)
}
_ALWAYS_KERNELS = ("kernel_util.cc",)
# CMSIS-NN source folders the optimized kernel of each op calls into.
_CMSIS_DIRS: dict[OpType, tuple[str, ...]] = {
    OpType.CONV_2D: ("ConvolutionFunctions", "NNSupportFunctions"),
    OpType.DEPTHWISE_CONV_2D: ("ConvolutionFunctions", "NNSupportFunctions"),
    OpType.FULLY_CONNECTED: ("FullyConnectedFunctions", "NNSupportFunctions", "ConvolutionFunctions"),
    OpType.ADD: ("BasicMathFunctions",),
    OpType.MUL: ("BasicMathFunctions",),
    OpType.AVERAGE_POOL_2D: ("PoolingFunctions",),
    OpType.MAX_POOL_2D: ("PoolingFunctions",),
    OpType.PAD: ("PadFunctions",),
    OpType.SOFTMAX: ("SoftmaxFunctions", "NNSupportFunctions"),
    OpType.TRANSPOSE_CONV: ("ConvolutionFunctions", "NNSupportFunctions"),
    OpType.BATCH_MATMUL: ("FullyConnectedFunctions", "NNSupportFunctions", "BasicMathFunctions"),
    OpType.MAXIMUM: ("BasicMathFunctions",),
    OpType.MINIMUM: ("BasicMathFunctions",),
    OpType.TRANSPOSE: ("TransposeFunctions",),
}
# Core sources only TFLM's own tests use; the library proper never references them.
_CORE_TEST_ONLY = ("test_helpers.cc", "test_helper_custom_ops.cc", "mock_micro_graph.cc", "fake_micro_context.cc")


def _kernel_set(kernels: str) -> str:
    if kernels not in KERNEL_SETS:
        raise DataError(f"unknown kernel set '{kernels}'; use one of {', '.join(KERNEL_SETS)}")
    return kernels


def library_sources(tree: Path, kernels: str, ops: Iterable[OpType], *, all_cmsis_nn: bool = False) -> list[tuple[str, str]]:
    """``(source, class)`` for the library objects the ops need; class is core, kernel or cmsis_nn.

    An op outside :data:`OP_KERNELS` pulls every kernel of the set (slow once, then cached);
    ``all_cmsis_nn`` every CMSIS-NN source (the fallback when a kernel calls outside its folders).
    """
    lists = source_lists(tree)
    kernel_list = lists["TFLM_KERNEL_SRCS_CMSIS_NN" if _kernel_set(kernels) == "cmsis-nn" else "TFLM_KERNEL_SRCS_REFERENCE"]
    available = set(kernel_list)
    ops = list(dict.fromkeys(ops))
    out = [(s, "core") for s in lists["TFLM_CORE_SRCS"] if s.rsplit("/", 1)[-1] not in _CORE_TEST_ONLY]
    if any(op not in OP_KERNELS for op in ops):
        wanted: list[str] = [s for s in kernel_list if s.startswith(_K)]
    else:
        wanted = []
        for name in (*_ALWAYS_KERNELS, *(f for op in ops for f in OP_KERNELS[op])):
            cmsis = _K + "cmsis_nn/" + name
            wanted.append(cmsis if kernels == "cmsis-nn" and cmsis in available else _K + name)
    out += [(s, "kernel") for s in dict.fromkeys(wanted) if s in available]
    if kernels == "cmsis-nn":
        dirs = {d for op in ops for d in _CMSIS_DIRS.get(op, ())} if all(op in OP_KERNELS for op in ops) else None
        dirs = None if all_cmsis_nn else dirs
        for s in lists["CMSIS_NN_SRCS"]:
            if dirs is None or s.split("/")[3] in dirs:
                out.append((s, "cmsis_nn"))
    return out


def include_dirs(tree: Path, target: Target) -> list[Path]:
    t = tree / "third_party"
    return [tree, t / "flatbuffers/include", t / "gemmlowp", t / "ruy", t / "kissfft",
            t / "cmsis/CMSIS/Core/Include", t / f"cmsis/Cortex_DFP/Device/{target.cmsis_device}/Include",
            t / "cmsis_nn", t / "cmsis_nn/Include"]


def arch_flags(target: Target) -> list[str]:
    return [f"-mcpu={target.mcpu}", f"-mfpu={target.mfpu}", "-mfloat-abi=hard", "-mthumb"]


def compile_flags(tree: Path, target: Target, kernels: str, lang: str, opt: str) -> list[str]:
    """Flags for one source: TFLM's cortex_m_generic set (release), C++17 or C11."""
    flags = [*arch_flags(target), opt, "-ffunction-sections", "-fdata-sections", "-fmessage-length=0",
             "-DTF_LITE_STATIC_MEMORY", "-DNDEBUG", f"-D{target.cmsis_device}",
             f'-DCMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE="{target.cmsis_device}.h"']
    if kernels == "cmsis-nn":
        flags.append("-DCMSIS_NN")
    if lang == "c++":
        flags += ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-fno-unwind-tables",
                  "-fno-use-cxa-atexit", "-Wno-psabi"]
    else:
        flags += ["-std=c11"]
    return flags + [f"-I{d}" for d in include_dirs(tree, target)]


def cache_root() -> Path:
    """``$TINYPREC_CACHE/tflm`` or ``~/.cache/tinyprec/tflm``; the system temp folder when that is not writable."""
    root = Path(os.environ.get("TINYPREC_CACHE") or Path.home() / ".cache" / "tinyprec") / "tflm"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        root = Path(tempfile.gettempdir()) / "tinyprec-cache" / "tflm"
        root.mkdir(parents=True, exist_ok=True)
    return root


def library_key(tree: Path, target: Target, kernels: str, tools: Toolchain) -> str:
    """Cache key of one object set: ``kernels`` is a kernel set, or "core" for the kernel-independent core."""
    flag_set = "reference" if kernels == "core" else kernels
    probe = compile_flags(Path("/TREE"), target, flag_set, "c++", "-O?") + compile_flags(Path("/TREE"), target, flag_set, "c", "-O?")
    blob = "\n".join([tree_fingerprint(tree), target.name, kernels, tools.version, *probe])
    return f"{target.name}-{kernels}-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Library:
    """The TFLM objects a model needs, compiled (or found in the cache)."""

    key: str
    cache_dir: Path
    objects: tuple[tuple[Path, str], ...]  # (object, class: core | kernel | cmsis_nn)
    compiled: int  # objects compiled in this call (0: all from the cache)
    seconds: float


def object_name(src: str) -> str:
    """A unique object file name per source (kernels/kernel_util.cc and micro/kernels/kernel_util.cc
    would clash as archive members under their base names)."""
    return src.rsplit(".", 1)[0].replace("/", "__") + ".o"


def _opt_for(cls: str) -> str:
    return "-Os" if cls == "core" else "-O2"


def _compile(tools: Toolchain, src: Path, obj: Path, flags: Sequence[str]) -> None:
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_name(f".{obj.name}.{os.getpid()}.{id(flags)}.tmp")
    compiler = tools.gxx if src.suffix == ".cc" else tools.gcc
    proc = subprocess.run([compiler, *flags, "-c", str(src), "-o", str(tmp)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
        raise DataError(f"compiling {src} for the MCU failed: {first}")
    os.replace(tmp, obj)


def _jobs() -> int:
    return max(1, int(os.environ.get("TINYPREC_BUILD_JOBS") or os.cpu_count() or 1))


def build_library(tree: Path, target: Target, kernels: str, ops: Iterable[OpType], tools: Toolchain, *,
                  all_cmsis_nn: bool = False) -> Library:
    """Compile (or reuse) the library objects for ``ops``; objects are cached per source.

    The core does not depend on the kernel set (its only CMSIS_NN conditional is in micro_profiler.cc,
    a printout the app does not link), so both kernel sets share one compiled core.
    """
    start = time.perf_counter()
    keys = {"core": library_key(tree, target, "core", tools), "kernels": library_key(tree, target, kernels, tools)}
    todo, objects = [], []
    for src, cls in library_sources(tree, kernels, ops, all_cmsis_nn=all_cmsis_nn):
        cache = cache_root() / keys["core" if cls == "core" else "kernels"]
        obj = cache / "obj" / object_name(src)
        objects.append((obj, cls))
        if not obj.is_file():
            lang = "c++" if src.endswith(".cc") else "c"
            todo.append((tree / src, obj, compile_flags(tree, target, "reference" if cls == "core" else kernels, lang, _opt_for(cls))))
    if todo:
        with ThreadPoolExecutor(max_workers=_jobs()) as pool:
            list(pool.map(lambda job: _compile(tools, *job), todo))
        for which, key in keys.items():
            (cache_root() / key).mkdir(parents=True, exist_ok=True)
            (cache_root() / key / "KEY.txt").write_text(
                f"tree {tree} ({tree_fingerprint(tree)})\ntarget {target.name}\nobjects {which if which == 'core' else kernels}\n"
                f"compiler {tools.version}\n")
    return Library(keys["kernels"], cache_root() / keys["kernels"], tuple(objects), len(todo), time.perf_counter() - start)


def firmware_dir() -> Path:
    """The app sources shipped with the package: main.cc, tinyprec_harness.h, startup.c, link.ld.tmpl."""
    return Path(str(resources.files("tinyprec.mcu") / "firmware"))


def linker_script(target: Target, stack_bytes: int = STACK_BYTES, heap_bytes: int = HEAP_BYTES) -> str:
    text = (firmware_dir() / "link.ld.tmpl").read_text()
    fields = {"FLASH_ORIGIN": target.flash_origin, "FLASH_LENGTH": target.flash_length, "RAM_ORIGIN": target.ram_origin,
              "RAM_LENGTH": target.ram_length, "STACK_SIZE": stack_bytes, "HEAP_SIZE": heap_bytes}
    for k, v in fields.items():
        text = text.replace("{{" + k + "}}", hex(v))
    return text


@dataclass(frozen=True)
class App:
    """The linked firmware image and what it was built from."""

    elf: Path
    map_file: Path
    build_dir: Path
    target: Target
    kernels: str
    library: Library
    app_seconds: float


BUNDLE_FILES = ("model_data.h", "model_data.cc", "model_settings.h", "op_resolver.h", "golden_vectors.h")


def bundle_ops(bundle_dir: Path) -> list[OpType]:
    """The ops op_resolver.h registers (its ``kModelOpCount`` comment lists them)."""
    text = (bundle_dir / "op_resolver.h").read_text()
    m = re.search(r"kModelOpCount = \d+;\s*//\s*(.*)", text)
    if m is None:
        raise DataError(f"{bundle_dir / 'op_resolver.h'} is not a tinyprec op resolver; re-export the model")
    by_value = {t.value: t for t in OpType}
    names = [n.strip() for n in m.group(1).split(",") if n.strip()]
    unknown = [n for n in names if n not in by_value]
    if unknown:
        raise DataError(f"{bundle_dir / 'op_resolver.h'} registers ops this tinyprec does not know: {', '.join(unknown)}")
    return [by_value[n] for n in names]


def build_app(bundle_dir: Path, build_dir: Path, *, target: str | Target = "cortex-m4", kernels: str = "reference",
              tree: Path, tools: Toolchain | None = None, defines: Sequence[str] = ()) -> App:
    """Compile the bundle + main.cc + start-up code against the (cached) library; link for the QEMU board.

    ``defines`` (``NAME=VALUE``) go to the app's compile only (the tensor-dump debug build uses them).
    """
    tools = tools or find_toolchain(need_qemu=False)
    tgt = get_target(target) if isinstance(target, str) else target
    _kernel_set(kernels)
    tree = check_tree(Path(tree))
    bundle_dir = Path(bundle_dir)
    missing = [f for f in BUNDLE_FILES if not (bundle_dir / f).is_file()]
    if missing:
        raise DataError(f"{bundle_dir} lacks {', '.join(missing)}; run `tinyprec export` to write the firmware bundle")
    build_dir = Path(build_dir)
    wide = build_dir / "all_cmsis_nn"  # marker: this model's kernels need more of CMSIS-NN than _CMSIS_DIRS says
    lib = build_library(tree, tgt, kernels, bundle_ops(bundle_dir), tools, all_cmsis_nn=kernels == "cmsis-nn" and wide.is_file())
    start = time.perf_counter()
    build_dir.mkdir(parents=True, exist_ok=True)
    fw = firmware_dir()
    (build_dir / "link.ld").write_text(linker_script(tgt))
    app_flags = ["-DTINYPREC_MCU_HARNESS", *(f"-D{d}" for d in defines), f"-I{bundle_dir}", f"-I{fw}"]
    jobs = [(fw / "main.cc", build_dir / "main.o", compile_flags(tree, tgt, kernels, "c++", "-Os") + app_flags),
            (bundle_dir / "model_data.cc", build_dir / "model_data.o", compile_flags(tree, tgt, kernels, "c++", "-Os") + app_flags),
            (fw / "startup.c", build_dir / "startup.o", compile_flags(tree, tgt, kernels, "c", "-Os"))]
    elf, map_file, key_file = build_dir / "app.elf", build_dir / "app.map", build_dir / "app.key"
    h = hashlib.sha256("\n".join([tools.version, linker_script(tgt), *(str(o) for o, _ in lib.objects)]).encode())
    for src, _, flags in jobs:
        h.update(src.read_bytes() + "\0".join(flags).encode())
    for name in (*BUNDLE_FILES, "tinyprec_harness.h"):
        h.update((bundle_dir / name if name in BUNDLE_FILES else fw / name).read_bytes())
    app_key = h.hexdigest()
    if elf.is_file() and map_file.is_file() and key_file.is_file() and key_file.read_text() == app_key:
        return App(elf, map_file, build_dir, tgt, kernels, lib, time.perf_counter() - start)  # unchanged: reuse
    key_file.unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=_jobs()) as pool:
        list(pool.map(lambda job: _compile(tools, *job), jobs))
    archive = build_dir / "libtflm.a"
    archive.unlink(missing_ok=True)
    link = [tools.gxx, *arch_flags(tgt), "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
            f"-T{build_dir / 'link.ld'}", "-Wl,--gc-sections", f"-Wl,-Map={map_file}", "-Wl,--no-warn-rwx-segments",
            str(build_dir / "startup.o"), str(build_dir / "main.o"), str(build_dir / "model_data.o"), str(archive),
            "-lstdc++", "-lm", "-o", str(elf)]
    _run([tools.ar, "rcs", str(archive), *(str(o) for o, _ in lib.objects)], "archiving the TFLM objects")
    try:
        _run(link, "linking the firmware image")
    except DataError as err:
        if kernels != "cmsis-nn" or "undefined reference" not in str(err):
            raise
        # A CMSIS-NN kernel called outside the folders _CMSIS_DIRS names: build all of CMSIS-NN (once, cached).
        lib = build_library(tree, tgt, kernels, bundle_ops(bundle_dir), tools, all_cmsis_nn=True)
        wide.write_text("the link needed CMSIS-NN sources outside the op's folders\n")
        archive.unlink(missing_ok=True)
        _run([tools.ar, "rcs", str(archive), *(str(o) for o, _ in lib.objects)], "archiving the TFLM objects")
        _run(link, "linking the firmware image")
    key_file.write_text(app_key)
    return App(elf, map_file, build_dir, tgt, kernels, lib, time.perf_counter() - start)


def _run(cmd: Sequence[str], what: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "undefined reference" in ln or "error" in ln), lines[0] if lines else "")
        raise DataError(f"{what} failed: {detail.strip()[:300]}")
    return proc.stdout
