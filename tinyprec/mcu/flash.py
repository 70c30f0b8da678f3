"""Flash and RAM needs of a model under TFLM, and the op resolver it needs.

Model bytes and the arena are exact (file size; measured arena). The TFLM runtime code size is an
ESTIMATE: a fixed core (interpreter, allocator, memory planner, flatbuffer access) plus a figure per
reference kernel registered. The core and the kernels of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
ADD, the poolings, RESHAPE and SOFTMAX are sizes measured in the link maps of our Cortex-M4 builds
(arm-none-eabi-gcc 12, core -Os, kernels -O2, release; benchmarks/bench_mcu.py); the rest are priors.
CMSIS-NN kernels add 30-50 KB on top. Where a build exists (`tinyprec mcu`, the `mcu` runner) the
measured flash replaces this estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tinyprec.ir import Graph, OpType

FLASH_LABEL = "estimate (TFLM core + reference kernels, sizes from Cortex-M4 builds)"
RUNTIME_CORE_BYTES = 21_000

# op -> (MicroMutableOpResolver method, estimated code bytes of the reference int8 kernel).
RESOLVER: dict[OpType, tuple[str, int]] = {
    OpType.CONV_2D: ("AddConv2D", 6_000),
    OpType.DEPTHWISE_CONV_2D: ("AddDepthwiseConv2D", 5_000),
    OpType.FULLY_CONNECTED: ("AddFullyConnected", 4_900),
    OpType.ADD: ("AddAdd", 8_900),
    OpType.MUL: ("AddMul", 2_500),
    OpType.AVERAGE_POOL_2D: ("AddAveragePool2D", 2_700),
    OpType.MAX_POOL_2D: ("AddMaxPool2D", 2_700),
    OpType.MEAN: ("AddMean", 4_000),
    OpType.RESHAPE: ("AddReshape", 1_000),
    OpType.CONCATENATION: ("AddConcatenation", 2_000),
    OpType.PAD: ("AddPad", 1_500),
    OpType.SOFTMAX: ("AddSoftmax", 6_000),
    OpType.LOGISTIC: ("AddLogistic", 2_000),
    OpType.TANH: ("AddTanh", 2_000),
    OpType.QUANTIZE: ("AddQuantize", 2_000),
    OpType.DEQUANTIZE: ("AddDequantize", 1_500),
    OpType.HARD_SWISH: ("AddHardSwish", 1_500),
    OpType.LEAKY_RELU: ("AddLeakyRelu", 1_500),
    OpType.SUB: ("AddSub", 3_000),
    OpType.MAXIMUM: ("AddMaximum", 1_500),
    OpType.MINIMUM: ("AddMinimum", 1_500),
    OpType.ABS: ("AddAbs", 2_000),
    OpType.TRANSPOSE: ("AddTranspose", 1_500),
    OpType.STRIDED_SLICE: ("AddStridedSlice", 2_000),
    OpType.PRELU: ("AddPrelu", 2_500),
    OpType.RESIZE_NEAREST_NEIGHBOR: ("AddResizeNearestNeighbor", 1_500),
    OpType.RESIZE_BILINEAR: ("AddResizeBilinear", 2_500),
    OpType.TRANSPOSE_CONV: ("AddTransposeConv", 5_000),
    OpType.DEPTH_TO_SPACE: ("AddDepthToSpace", 1_500),
    OpType.BATCH_MATMUL: ("AddBatchMatMul", 5_000),
    OpType.ELU: ("AddElu", 1_500),  # a 256-byte table built in Prepare (expf pulls libm)
    OpType.REDUCE_MAX: ("AddReduceMax", 3_000),  # reduce.cc is shared with MEAN
    OpType.RSQRT: ("AddRsqrt", 2_500),  # elementwise.cc (shared with ABS): Newton-Raphson per element; estimate
}


def resolver_methods(ops: Iterable[OpType]) -> list[str]:
    """The MicroMutableOpResolver ``Add...()`` calls for the distinct ops, in first-use order."""
    seen: list[OpType] = []
    for op in ops:
        if op not in seen:
            seen.append(op)
    return [RESOLVER[op][0] for op in seen]


def runtime_code_bytes(ops: Iterable[OpType]) -> int:
    """ESTIMATED bytes of TFLM code for the core and the distinct ops used."""
    return RUNTIME_CORE_BYTES + sum(RESOLVER[op][1] for op in set(ops))


@dataclass(frozen=True)
class Resources:
    """What a model needs on the MCU. ``*_estimate`` fields are estimates; the rest are exact."""

    model_bytes: int
    runtime_code_bytes_estimate: int
    arena_bytes: int
    io_buffer_bytes: int
    resolver: tuple[str, ...]

    @property
    def flash_bytes(self) -> int:
        """Model flatbuffer + estimated TFLM code."""
        return self.model_bytes + self.runtime_code_bytes_estimate

    @property
    def ram_bytes(self) -> int:
        """Arena (measured) + application I/O buffers."""
        return self.arena_bytes + self.io_buffer_bytes


def io_buffer_bytes(graph: Graph) -> int:
    """Application-side buffers outside the arena: one float32 raw input sample (before quantization)
    and one float32 copy of the dequantized output. The int8 input/output tensors live in the arena."""
    total = 0
    for name in (*graph.inputs, *graph.outputs):
        shape = graph.tensors[name].shape
        total += 4 * int(math.prod(shape[1:] if len(shape) > 1 else shape))
    return total


def resources(graph: Graph, model_bytes: int, arena_bytes: int) -> Resources:
    """Flash and RAM needs of ``graph`` stored as ``model_bytes`` bytes with a measured arena."""
    ops = graph.op_types()
    return Resources(
        model_bytes=int(model_bytes),
        runtime_code_bytes_estimate=runtime_code_bytes(ops),
        arena_bytes=int(arena_bytes),
        io_buffer_bytes=io_buffer_bytes(graph),
        resolver=tuple(resolver_methods(ops)),
    )
