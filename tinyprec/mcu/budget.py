"""Flash and RAM of a model, or of a per-layer precision assignment, under TFLM (torch-free).

RAM is TFLM's arena: a *head* that TFLM's greedy memory planner lays out (every non-constant tensor for
its lifetime, plus the scratch buffers kernels request for one op each) and the *rest*: a tail of
persistent structures (eval tensors, node structs, per-channel multipliers) and, for tiny models, the
planning's own temporary space where it exceeds the head. :func:`plan_head` re-implements the greedy
planner (tensorflow/lite/micro/memory_planner/greedy_memory_planner.cc: buffers sorted by size, largest
first, each placed in the lowest gap among the buffers alive at the same time, sizes aligned to 16
bytes), so the head of a graph is exact; the rest is measured on a reference file (the int8 model:
``arena - head`` of :func:`tinyprec.runtimes.tflm.tflm_arena_report`) plus a per-op figure for the
QUANTIZE ops an assignment adds.

Precision costs, as TFLM has them:

* INT4 weights are stored packed (two per byte). TFLM's reference kernels unpack them at run time into a
  scratch buffer of the layer's weight count, requested by CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED
  for that op only (kernels/conv_common.cc). All INT4 layers' scratch buffers share one region in time,
  so the head grows by at most the largest INT4 layer's weight count, at that layer's place in the plan.
  TFLM's CMSIS-NN kernels (``kernels="cmsis-nn"``) read the packed weights directly (arm_convolve_s4,
  arm_depthwise_conv_s4, arm_fully_connected_s4): no unpack scratch, so INT4 costs (almost) no RAM
  there; only a 3x3 depthwise asks ``2 * 9 * C`` bytes its int8 kernel does without (measured on the
  emulated Cortex-M4: tests/test_mcu_lowbits.py, benchmarks/results/lowbits.json).
* int16 activations take two bytes per element; ops reading int16 take an INT64 bias.
* Going from int8 to int16 or back is a QUANTIZE op with its own output tensor.

>>> plan_head([Buffer(100, 0, 1), Buffer(50, 1, 2), Buffer(30, 2, 3)])
160
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tinyprec.ir import Graph, Op, OpType

ALIGNMENT = 16  # MicroArenaBufferAlignment()
WEIGHTED = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)
SPLITTABLE = (OpType.CONV_2D, OpType.FULLY_CONNECTED)  # output channels = filter rows (OHWI, [out, in])
MAX_PIECES = 10  # TFLM's CONCATENATION takes at most 10 inputs (kMaxInputNum in concatenation.cc)
# Measured on the host build of the pinned tflite-micro wheel (64-bit pointers), digits_cnn int8 vs its
# variants: the arena's rest grows by ~120 B per added QUANTIZE op (node struct, eval tensor, op data) and
# 8 B per INT4 layer after the first (scratch handles); the file by ~144 B per QUANTIZE op.
EXTRA_OP_REST_BYTES = 120
EXTRA_INT4_REST_BYTES = 8
EXTRA_OP_FILE_BYTES = 144
# Splitting an INT4 layer into k channel groups + CONCATENATION (tinyprec.lowering.split), per piece:
# measured 230 / 247 B on a 256x256 FULLY_CONNECTED split 2, 4 and 8 ways and up to 276 / 296 B on
# CONV_2D layers; the larger figures, so that the estimate errs on the safe side (the search confirms its
# choice on TFLM anyway).
SPLIT_FILE_BYTES = 280
SPLIT_REST_BYTES = 300
# Kernel set -> whether its INT4 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED unpack the weights into arena scratch.
UNPACKS_INT4 = {"reference": True, "cmsis-nn": False}


@dataclass(frozen=True)
class _Bits:
    weight_bits: int = 8
    act_bits: int = 8


_W8A8 = _Bits()


class Precision(Protocol):
    """What the budget needs of a layer's precision (tinyprec.quant.bits.LayerPrecision has it)."""

    @property
    def weight_bits(self) -> int: ...

    @property
    def act_bits(self) -> int: ...


@dataclass(frozen=True)
class Buffer:
    """One planned allocation: ``size`` bytes alive from op ``first`` to op ``last`` (inclusive)."""

    size: int
    first: int
    last: int
    name: str = ""


def align(n: int) -> int:
    return (int(n) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_offsets(buffers: Sequence[Buffer]) -> list[int]:
    """Offsets TFLM's greedy planner gives ``buffers`` (sizes aligned up to 16 bytes), in their order."""
    sizes = [align(b.size) for b in buffers]
    # TFLM fills its sort array from the end, then bubble-sorts by size (stable): ties in reverse order.
    order = sorted(reversed(range(len(buffers))), key=lambda i: -sizes[i])
    offsets = [0] * len(buffers)
    placed: list[int] = []  # indices, kept sorted by offset
    for i in order:
        b, candidate = buffers[i], 0
        for j in placed:
            o = buffers[j]
            if o.first > b.last or b.first > o.last:
                continue  # not alive at the same time
            if offsets[j] - candidate >= sizes[i]:
                break  # the gap before this buffer fits
            candidate = max(candidate, offsets[j] + sizes[j])
        offsets[i] = candidate
        placed.append(i)
        placed.sort(key=lambda j: offsets[j])
    return offsets


def plan_head(buffers: Sequence[Buffer]) -> int:
    """Bytes the greedy plan of ``buffers`` spans (TFLM's arena head)."""
    if not buffers:
        return 0
    offsets = plan_offsets(buffers)
    return max(o + align(b.size) for o, b in zip(offsets, buffers))


def tensor_bytes(graph: Graph, name: str) -> int:
    """Bytes of one tensor as stored: INT4 packed two per byte (odd counts padded)."""
    t = graph.tensors[name]
    n = int(math.prod(t.shape))
    if t.dtype.value == "int4":
        return (n + 1) // 2
    return n * t.dtype.numpy.itemsize


def _weight(graph: Graph, op: Op) -> str | None:
    if op.type not in WEIGHTED or len(op.inputs) < 2 or op.inputs[1] is None:
        return None
    return op.inputs[1] if graph.tensors[op.inputs[1]].is_const else None


def graph_buffers(graph: Graph, kernels: str = "reference") -> list[Buffer]:
    """The planner's buffers for ``graph`` as TFLM lays them out: non-constant tensors with their
    lifetimes (inputs from 0, outputs to the end), then one INT4 unpack scratch per INT4 layer (reference
    kernels only)."""
    first: dict[str, int] = {n: 0 for n in graph.inputs}
    last: dict[str, int] = {n: 0 for n in graph.inputs}
    scratch: list[Buffer] = []
    for i, op in enumerate(graph.ops, start=1):
        for name in op.outputs:
            first.setdefault(name, i)
        for used in (*op.inputs, *op.outputs):
            if used is not None:
                last[used] = i
        scratch += [Buffer(size, i, i, what) for size, what in op_scratch(graph, op, kernels)]
    end = len(graph.ops)
    for name in graph.outputs:
        first.setdefault(name, end)
        last[name] = end
    tensors = [Buffer(tensor_bytes(graph, n), first[n], last[n], n) for n in graph.tensors
               if n in first and not graph.tensors[n].is_const and tensor_bytes(graph, n) > 0]
    return tensors + scratch


def op_scratch(graph: Graph, op: Op, kernels: str = "reference") -> list[tuple[int, str]]:
    """The scratch buffers (bytes, name) an op's Prepare requests in TFLM, in order: the INT4 unpack
    buffer of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (reference kernels; CMSIS-NN reads INT4
    packed, but its INT4 depthwise asks for a small buffer its int8 3x3 kernel does without), and MEAN's
    int32 accumulator, input iterator and resolved axes (kernels/reduce_common.cc). With CMSIS-NN only what
    INT4 adds over int8 is planned: the int8 model's own CMSIS-NN buffers are in its measured arena."""
    w = _weight(graph, op)
    if w is not None and graph.tensors[w].dtype.value == "int4" and unpacks_int4(kernels):
        return [(int(math.prod(graph.tensors[w].shape)), f"{w}:unpacked")]
    if w is not None and graph.tensors[w].dtype.value == "int4" and op.type is OpType.DEPTHWISE_CONV_2D:
        extra = _cmsis_s4_depthwise_extra(graph, op, w)
        return [(extra, f"{w}:cmsis-s4-buffer")] if extra else []
    if op.type is OpType.MEAN and op.inputs[0] is not None and len(op.inputs) > 1 and op.inputs[1] is not None:
        x, y, axes = (graph.tensors[n] for n in (op.inputs[0], op.outputs[0], op.inputs[1]))
        acc = [(4 * int(math.prod(y.shape)), "mean:acc")] if x.dtype.value in ("int8", "int16") else []
        return [*acc, (4 * len(x.shape), "mean:iter"), (4 * int(math.prod(axes.shape)), "mean:axes")]
    return []


def _cmsis_s4_depthwise_extra(graph: Graph, op: Op, w: str) -> int:
    """The scratch CMSIS-NN's INT4 depthwise requests where its int8 twin requests none (on a DSP core such as the
    Cortex-M4/M7/M33): arm_depthwise_conv_wrapper_s4_get_buffer_size asks ``C * kh * kw`` int16 for every
    multiplier-1, undilated, batch-1 layer, while the s8 wrapper's 3x3 kernel (padding <= 1) needs none."""
    shape = graph.tensors[w].shape  # 1, kh, kw, C
    x = graph.tensors[op.inputs[0]]  # type: ignore[index]
    opts = op.options
    plain = (getattr(opts, "depth_multiplier", 1) == 1 and getattr(opts, "dilation_h", 1) == 1
             and getattr(opts, "dilation_w", 1) == 1 and x.shape[0] == 1 and x.shape[-1] == shape[-1])
    return 2 * int(shape[1] * shape[2] * shape[3]) if plain and (shape[1], shape[2]) == (3, 3) else 0


def unpacks_int4(kernels: str) -> bool:
    """Whether TFLM's ``kernels`` ("reference" | "cmsis-nn") unpack INT4 weights into arena scratch.

    >>> unpacks_int4("reference"), unpacks_int4("cmsis-nn")
    (True, False)
    """
    if kernels not in UNPACKS_INT4:
        raise ValueError(f"unknown TFLM kernel set '{kernels}': use one of {', '.join(UNPACKS_INT4)}")
    return UNPACKS_INT4[kernels]


def pieces_for(weights: int, channels: int, max_scratch: int) -> int:
    """Channel groups for an INT4 layer split (tinyprec.lowering.split): the fewest that divide
    ``channels`` evenly (at most 10) with an unpack scratch <= ``max_scratch``; else the most such groups."""
    per_channel = weights // channels
    ks = [k for k in range(1, min(channels, MAX_PIECES) + 1) if channels % k == 0]
    return next((k for k in ks if per_channel * (channels // k) <= max_scratch), ks[-1])


def int4_scratch_bytes(graph: Graph, kernels: str = "reference") -> int:
    """The largest INT4 layer's weight count: the unpack scratch TFLM needs (0 without INT4 weights, or
    with CMSIS-NN kernels)."""
    return max((b.size for b in graph_buffers(graph, kernels) if b.name.endswith(":unpacked")), default=0)


def const_bytes(graph: Graph) -> int:
    """Bytes of every constant tensor as stored in the file (INT4 packed)."""
    return sum(tensor_bytes(graph, n) for n, t in graph.tensors.items() if t.is_const)


@dataclass(frozen=True)
class Budget:
    """Flash and RAM of a model or of an assignment. ``head_bytes`` is exact for a graph (TFLM's plan);
    ``rest_bytes`` (arena minus head) comes from a measured reference file; ``flash_bytes`` is the file size (measured, or the
    int8 file's size plus the change in constant bytes for an assignment)."""

    const_bytes: int
    flash_bytes: int
    head_bytes: int
    rest_bytes: int
    int4_scratch_bytes: int
    int16_activation_bytes: int

    @property
    def arena_bytes(self) -> int:
        return self.head_bytes + self.rest_bytes


def graph_budget(graph: Graph, *, rest_bytes: int, file_bytes: int | None = None, kernels: str = "reference") -> Budget:
    """The budget of a lowered graph; ``rest_bytes`` (arena - head) from TFLM's measurement of it or of
    its int8 twin."""
    buffers = graph_buffers(graph, kernels)
    consts = const_bytes(graph)
    int16 = sum(b.size for b in buffers if b.name in graph.tensors and graph.tensors[b.name].dtype.value == "int16")
    return Budget(consts, consts if file_bytes is None else int(file_bytes), plan_head(buffers), int(rest_bytes),
                  int4_scratch_bytes(graph, kernels), int16)


# ---- an assignment applied to the int8 graph, before lowering it ----------------------------------------


def op_module(graph: Graph, op: Op) -> str | None:
    """The PyTorch module an op came from (its source, or its output tensor's)."""
    return op.source or graph.tensors[op.outputs[0]].source


def weighted_layers(graph: Graph) -> dict[str, tuple[int, int]]:
    """Module path -> (weight count, output channels) of each CONV/DEPTHWISE/FC with constant weights."""
    out: dict[str, tuple[int, int]] = {}
    for op in graph.ops:
        w, module = _weight(graph, op), op_module(graph, op)
        if w is not None and module:
            shape = graph.tensors[w].shape
            channels = shape[-1] if op.type is OpType.DEPTHWISE_CONV_2D else shape[0]
            out[module] = (int(math.prod(shape)), int(channels))
    return out


def assignment_budget(graph: Graph, assignment: Mapping[str, Precision], *, rest_bytes: int,
                      file_bytes: int, int4_max_scratch: int | None = None, kernels: str = "reference") -> Budget:
    """The budget of the int8 ``graph`` (measured ``file_bytes`` and ``rest_bytes`` = arena - head) with each weighted
    layer at its assigned precision (module path -> weight_bits, act_bits; absent layers stay w8a8).

    Activations: a weighted layer computes in its ``act_bits`` (TFLM's 16x8 kernels read and write int16);
    other ops keep their input's width; where a layer's input width differs, a QUANTIZE (int8 <-> int16)
    sits in front of it, as the lowering puts it. The exported file's own graph (:func:`graph_budget`) and
    TFLM's measurement are the final word. With ``int4_max_scratch``, INT4 layers over it are split into
    channel groups + CONCATENATION as :func:`tinyprec.lowering.split.split_int4_layers` does.
    ``kernels="cmsis-nn"``: INT4 layers need no unpack scratch (and are never split).
    """
    unpack = unpacks_int4(kernels)
    bits: dict[str, int] = {n: 8 for n in graph.tensors}
    steps: list[tuple[list[tuple[str, int]], list[tuple[str, int]], list[int]]] = []  # (inputs, outputs, scratch)
    consts = const_bytes(graph)
    extra_ops = int4 = int4_layers = splits = 0
    for op in graph.ops:
        ins = [n for n in op.inputs if n is not None and not graph.tensors[n].is_const]
        outs = list(op.outputs)
        w = _weight(graph, op)
        module = op_module(graph, op)
        in_bits = bits[ins[0]] if ins else 8
        if w is None:  # ops without weights keep their input's width
            for n in outs:
                bits[n] = in_bits
            steps.append((_widths(ins, bits), [(n, in_bits) for n in outs], [b for b, _ in op_scratch(graph, op, kernels)]))
            continue
        prec = assignment.get(module or "") or _W8A8
        wcount = int(math.prod(graph.tensors[w].shape)) if w is not None else 0
        if prec.weight_bits == 4:
            consts -= wcount - (wcount + 1) // 2
            int4_layers += 1
        out_bits = int(prec.act_bits)  # a layer computes in the bits of its output (16x8 reads int16)
        if in_bits != out_bits:  # QUANTIZE int8 <-> int16 on the edge in front of it
            q = f"{ins[0]}:q{out_bits}"
            steps.append(([(ins[0], in_bits)], [(q, out_bits)], []))
            ins = [q, *ins[1:]]
            bits[q], extra_ops = out_bits, extra_ops + 1
        if out_bits == 16:
            consts += 4 * _channels(graph, op)  # INT64 bias instead of INT32
        k = 1
        if (unpack and prec.weight_bits == 4 and int4_max_scratch is not None and wcount > int4_max_scratch
                and op.type in SPLITTABLE):
            k = pieces_for(wcount, _channels(graph, op), int4_max_scratch)
        if k > 1:
            parts = [f"{outs[0]}:s{i}/{k}" for i in range(k)]  # one k-th of the output each
            for part in parts:
                steps.append((_widths(ins, bits), [(part, out_bits)], [wcount // k]))
                int4 = max(int4, wcount // k)
            steps.append(([(part, out_bits) for part in parts], [(outs[0], out_bits)], []))
            splits += k
        else:
            scratch = [wcount] if prec.weight_bits == 4 and unpack else []
            int4 = max(int4, wcount if prec.weight_bits == 4 and unpack else 0)
            steps.append((_widths(ins, bits), [(n, out_bits) for n in outs], scratch))
        for n in outs:
            bits[n] = out_bits
    buffers, int16 = _step_buffers(graph, steps)
    rest = (int(rest_bytes) + EXTRA_OP_REST_BYTES * extra_ops + EXTRA_INT4_REST_BYTES * max(0, int4_layers - 1)
            + SPLIT_REST_BYTES * splits)
    return Budget(consts, int(file_bytes) + consts - const_bytes(graph) + EXTRA_OP_FILE_BYTES * extra_ops
                  + SPLIT_FILE_BYTES * splits,
                  plan_head(buffers), rest, int4, int16)


def _widths(names: list[str], bits: Mapping[str, int]) -> list[tuple[str, int]]:
    return [(n, bits.get(n, 16)) for n in names]


def _channels(graph: Graph, op: Op) -> int:
    w = graph.tensors[op.inputs[1]]  # type: ignore[index]
    return int(w.shape[-1] if op.type is OpType.DEPTHWISE_CONV_2D else w.shape[0])


def _step_buffers(graph: Graph, steps: list[tuple[list[tuple[str, int]], list[tuple[str, int]], list[int]]]
                  ) -> tuple[list[Buffer], int]:
    """Buffers of a step list (one step per op, in order) and the bytes of its int16 tensors. A name
    "t:q16" is an int16 copy of int8 tensor t that a QUANTIZE op adds, "t:s2/4" a quarter of t."""
    first: dict[str, int] = {n: 0 for n in graph.inputs}
    last: dict[str, int] = {n: 0 for n in graph.inputs}
    width: dict[str, int] = {}
    scratch: list[Buffer] = []
    for i, (ins, outs, scr) in enumerate(steps, start=1):
        for n, b in outs:
            first.setdefault(n, i)
            width[n] = b // 8
        for n, _ in (*ins, *outs):
            last[n] = i
        scratch += [Buffer(size, i, i, f"op{i}:scratch") for size in scr]
    for n in graph.outputs:
        first.setdefault(n, len(steps))
        last[n] = len(steps)
    buffers, int16 = [], 0
    for n in first:
        t = graph.tensors[n.split(":")[0]]
        per = width.get(n, 1) if t.dtype.value == "int8" else t.dtype.numpy.itemsize
        size = int(math.prod(t.shape)) * per // (int(n.rsplit("/", 1)[1]) if "/" in n else 1)
        int16 += size if t.dtype.value == "int8" and per == 2 else 0
        buffers.append(Buffer(size, first[n], last[n], n))
    return buffers + scratch, int16
