"""Integer indexing (x[:, i]), torch.stack, unbind and indexing by a constant list (x[:, [0, 2]]) from PyTorch:
each through the product quantizer, the lowering, the .tflite (written and read back), the QDQ ONNX, the
emulator and the tflm_exact program (which runs PyTorch's own op on the int8 values, so it also checks the
NHWC layout after a dim goes or comes), with TFLM == emulator == tflm_exact == TF Lite reference on every
element and ONNX Runtime within 1 LSB. Then the IR patterns the lowering emits, as micro-models against
TFLM and numpy, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402

from tinyprec.errors import UnsupportedOpsError  # noqa: E402


class Pick(nn.Module):
    """conv -> the construct -> (model output), so the construct reads a quantized activation."""

    def __init__(self, rank: int, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1) if rank == 4 else nn.Conv1d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.conv(x))


def _unbind_stack(y: torch.Tensor) -> torch.Tensor:
    a, _, _, d = y.unbind(1)
    return torch.stack([d, a], dim=2)


# name: (rank of the conv's output, construct, IR ops after the conv)
CASES = {
    "select_channel_nchw": (4, lambda y: y[:, 1], ["STRIDED_SLICE", "RESHAPE", "TRANSPOSE"]),
    "select_row_nchw": (4, lambda y: y[:, :, 2], ["STRIDED_SLICE"]),
    "select_last_col_nchw": (4, lambda y: y[:, :, :, -1], ["STRIDED_SLICE", "RESHAPE"]),
    "select_channel_ncl": (3, lambda y: y[:, 2], ["STRIDED_SLICE", "RESHAPE"]),
    "select_step_ncl": (3, lambda y: y.select(2, 3), ["STRIDED_SLICE", "RESHAPE"]),
    "stack_ncl_dim1": (3, lambda y: torch.stack([y, torch.relu(y)], 1),
                       ["MUL", "CONCATENATION", "TRANSPOSE"]),
    "stack_ncl_dim2_relu": (3, lambda y: torch.relu(torch.stack([y, y], dim=2)),
                            ["CONCATENATION", "MUL"]),  # TFLM's CONCATENATION fuses no activation
    "stack_nf_dim1": (3, lambda y: torch.stack([y[:, 0], y[:, 1], y[:, 3]], dim=1),
                      ["STRIDED_SLICE"] * 3 + ["CONCATENATION"]),  # select + unsqueeze: two RESHAPEs that cancel
    "unbind_then_stack": (3, _unbind_stack,
                          ["STRIDED_SLICE", "STRIDED_SLICE", "RESHAPE", "RESHAPE", "CONCATENATION"]),
    "index_list_ncl": (3, lambda y: y[:, [0, 2, 3, 1]], ["STRIDED_SLICE"] * 3 + ["CONCATENATION"]),
    "index_list_nchw_negative": (4, lambda y: y[:, :, [4, 2, 0, -1]], ["STRIDED_SLICE"] * 3 + ["CONCATENATION"]),
    "index_progression_is_one_slice": (4, lambda y: y[:, :, :, [0, 2, 4]], ["STRIDED_SLICE"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_select_stack_index_end_to_end_exact(case: str) -> None:
    rank, fn, ops = CASES[case]
    torch.manual_seed(0)
    out = run_everywhere(Pick(rank, fn), (2, 6, 5) if rank == 4 else (3, 8))
    assert out.op_types() == ["CONV_2D", *ops], out.op_types()
    # ONNX Runtime requantizes in float, <= 1 LSB per rescaling op: the conv, and the standalone ReLU's MUL
    assert_exact(out, onnx_lsb=2 if "relu" in case else 1)


def test_the_issue_constructs_pass_the_op_check() -> None:
    """What the issue listed as refused before training: stack, y[:, 0], unbind, y[:, [0, 2]]."""
    from tinyprec.quant.capture import check_supported

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            a, b, _, _ = y.unbind(1)
            return torch.stack([a, b], dim=1) + torch.stack([y[:, 0], y[:, 3]], dim=1) + y[:, [0, 2]]

    check_supported(Model().eval(), torch.zeros(2, 3, 8))


def _refusal(fn, shape: tuple[int, ...], match: str) -> None:  # type: ignore[no-untyped-def]
    from tinyprec.quant.capture import check_graph, example_like, export_for_quant

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return fn(x)

    with pytest.raises(UnsupportedOpsError, match=match):
        check_graph(export_for_quant(M().eval(), example_like(shape), train=False))


@pytest.mark.parametrize("fn, shape, match", [
    (lambda x: x[0], (3, 8), "batch dim"),
    (lambda x: x[:, 1], (6,), r"x\[:, i:i \+ 1\]"),
    (lambda x: torch.stack([x, x], 1), (2, 3, 4), "rank-4"),
    (lambda x: x[:, x[0, :, 0] > 0], (3, 8), "constant list of ints"),
    (lambda x: x[:, torch.tensor([[0, 1], [1, 0]])].flatten(2), (3, 8), "constant list of ints"),
])
def test_what_has_no_lowering_is_refused_with_the_alternative(fn, shape, match) -> None:  # type: ignore[no-untyped-def]
    _refusal(fn, shape, match)


def _chain(shape: tuple[int, ...], steps: list[tuple[str, tuple[int, ...], list[np.ndarray]]]):  # type: ignore[no-untyped-def]
    """A micro-model: one int8 input of IR ``shape``, then a chain of ops (type, output shape, int32 constant
    operands) as the lowering emits them, all with the input's qparams."""
    from tinyprec.ir import DType, Graph, NoOptions, Op, OpType, QParams, ReshapeOptions, Tensor
    from tinyprec.ir.ops import StridedSliceOptions

    qp = QParams.per_tensor(0.05, 3)
    tensors = {"x": Tensor("x", shape, DType.INT8, qp)}
    ops, current = [], "x"
    for k, (kind, out_shape, consts) in enumerate(steps):
        names = [f"c{k}_{j}" for j in range(len(consts))]
        for name, c in zip(names, consts):
            tensors[name] = Tensor(name, c.shape, DType.INT32, None, c.astype(np.int32))
        tensors[f"t{k}"] = Tensor(f"t{k}", out_shape, DType.INT8, qp)
        options = {"STRIDED_SLICE": lambda: StridedSliceOptions(begin_mask=1, end_mask=1),
                   "RESHAPE": lambda: ReshapeOptions(tuple(int(v) for v in consts[0])),
                   "TRANSPOSE": NoOptions}[kind]()
        ops.append(Op(OpType[kind], (current, *names), (f"t{k}",), options, name=f"t{k}"))
        current = f"t{k}"
    return Graph(tensors, ops, ["x"], [current])


def test_channel_select_pattern_micro_model_matches_tflm_and_numpy() -> None:
    """y[:, 1] of an (N, C=4, H=3, W=5) map, as lowered: STRIDED_SLICE (kept dim), RESHAPE, TRANSPOSE; TFLM ==
    emulator on corner inputs, and the result is numpy's y[:, 1] in the IR layout of (N, H, W): (N, 1, W, H)."""
    from tests._one_op import emulator_matches_tflm

    graph = _chain((1, 3, 5, 4), [
        ("STRIDED_SLICE", (1, 3, 5, 1), [np.array([0, 0, 0, 1]), np.array([1, 3, 5, 2]), np.ones(4)]),
        ("RESHAPE", (1, 1, 3, 5), [np.array([-1, 1, 3, 5])]),
        ("TRANSPOSE", (1, 1, 5, 3), [np.array([0, 1, 3, 2])]),
    ])
    _, xs, want, _ = emulator_matches_tflm(graph, "select micro-model")
    nchw = np.transpose(xs[0], (0, 3, 1, 2))  # IR (N, H, W, C) -> PyTorch (N, C, H, W)
    picked = nchw[:, 1]  # (N, H, W) -> IR (N, 1, W, H)
    np.testing.assert_array_equal(want, np.transpose(picked, (0, 2, 1))[:, None])


def select_stack_chain():  # type: ignore[no-untyped-def]
    """y[:, 1] of an (N, 4, 3, 5) map as lowered (STRIDED_SLICE, RESHAPE, TRANSPOSE), then a stack of it with
    itself along a new last dim (RESHAPE, CONCATENATION): the ops this lowering emits, for the Cortex-M4 run
    (tests/test_mcu_new_ops.py CHAINS)."""
    from tinyprec.ir import ConcatenationOptions, Graph, Op, OpType

    graph = _chain((1, 3, 5, 4), [
        ("STRIDED_SLICE", (1, 3, 5, 1), [np.array([0, 0, 0, 1]), np.array([1, 3, 5, 2]), np.ones(4)]),
        ("RESHAPE", (1, 1, 3, 5), [np.array([-1, 1, 3, 5])]),
        ("TRANSPOSE", (1, 1, 5, 3), [np.array([0, 1, 3, 2])]),
        ("RESHAPE", (1, 5, 3, 1), [np.array([-1, 5, 3, 1])]),
    ])
    t = graph.tensors["t3"]
    graph.tensors["out"] = type(t)("out", (1, 5, 3, 2), t.dtype, t.qparams)
    ops = [*graph.ops, Op(OpType.CONCATENATION, ("t3", "t3"), ("out",), ConcatenationOptions(3), name="out")]
    return Graph(graph.tensors, ops, graph.inputs, ["out"])


def test_select_stack_chain_micro_model_matches_tflm_and_numpy() -> None:
    from tests._one_op import emulator_matches_tflm

    _, xs, want, _ = emulator_matches_tflm(select_stack_chain(), "select + stack chain")
    picked = np.transpose(xs[0], (0, 3, 1, 2))[:, 1]  # y[:, 1]: (N, H, W)
    np.testing.assert_array_equal(want, np.stack([picked.transpose(0, 2, 1)] * 2, axis=3))  # out[n, w, h, k]


def test_stack_pattern_micro_model_matches_tflm_and_numpy() -> None:
    """torch.stack([y, y], 1) of (N, C=3, L=4), as lowered: TRANSPOSE + RESHAPE to (N, C, L, 1), then
    CONCATENATION on axis 3; TFLM == emulator, and the result is numpy's stack in the IR layout."""
    from tests._one_op import emulator_matches_tflm
    from tinyprec.ir import ConcatenationOptions, Graph, Op, OpType

    graph = _chain((1, 1, 4, 3), [
        ("TRANSPOSE", (1, 1, 3, 4), [np.array([0, 1, 3, 2])]),
        ("RESHAPE", (1, 3, 4, 1), [np.array([-1, 3, 4, 1])]),
    ])
    graph.tensors["out"] = graph.tensors["t1"].__class__("out", (1, 3, 4, 2), graph.tensors["t1"].dtype,
                                                         graph.tensors["t1"].qparams)
    ops = [*graph.ops, Op(OpType.CONCATENATION, ("t1", "t1"), ("out",), ConcatenationOptions(3), name="out")]
    graph = Graph(graph.tensors, ops, graph.inputs, ["out"])
    _, xs, want, _ = emulator_matches_tflm(graph, "stack micro-model")
    ncl = np.transpose(xs[0][:, 0], (0, 2, 1))  # IR (N, 1, L, C) -> (N, C, L)
    stacked = np.stack([ncl, ncl], axis=1)  # (N, 2, C, L) -> IR (N, C, L, 2)
    np.testing.assert_array_equal(want, np.transpose(stacked, (0, 2, 3, 1)))


def test_index_by_a_buffer_of_ints_end_to_end_exact() -> None:
    """The index list as a registered buffer (a get_attr, no lifted constant): the same slices + CONCATENATION."""

    class Buffered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(3, 5, 3, padding=1)
            self.register_buffer("order", torch.tensor([4, 0, 1, 2]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)[:, self.order]

    torch.manual_seed(0)
    out = run_everywhere(Buffered(), (3, 8))
    assert out.op_types() == ["CONV_2D", "STRIDED_SLICE", "STRIDED_SLICE", "CONCATENATION"], out.op_types()
    assert_exact(out)


class LinearStack(nn.Module):
    """Two Linear heads (lowered to CONV_2D, held as [1, 1, 1, F]) stacked, then a Conv1d over the stack."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a, self.b, self.dim = nn.Linear(8, 6), nn.Linear(8, 6), dim
        self.conv = nn.Conv1d(2 if dim == 1 else 6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.stack([self.a(x), self.b(x)], dim=self.dim))


@pytest.mark.parametrize("dim", [1, 2])
def test_stack_of_linear_outputs_end_to_end_exact(dim: int) -> None:
    torch.manual_seed(0)
    out = run_everywhere(LinearStack(dim), (8,))
    assert "CONCATENATION" in out.op_types(), out.op_types()
    assert_exact(out)


class LinearPick(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))[:, [5, 0, 1]]


def test_index_list_of_a_linear_output_end_to_end_exact() -> None:
    """A constant-list index of an (N, F) Linear output (held as [1, 1, 1, F], between the RESHAPEs of a
    Linear lowered to CONV_2D): slices + CONCATENATION."""
    torch.manual_seed(0)
    out = run_everywhere(LinearPick(), (8,))
    assert out.op_types()[1:5] == ["CONV_2D", "STRIDED_SLICE", "STRIDED_SLICE", "CONCATENATION"], out.op_types()
    assert_exact(out)


def test_index_select_with_a_constant_end_to_end_exact() -> None:
    class IndexSelect(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.register_buffer("keep", torch.tensor([3, 1]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).index_select(1, self.keep)

    torch.manual_seed(0)
    out = run_everywhere(IndexSelect(), (2, 6, 5))
    assert out.op_types() == ["CONV_2D", "STRIDED_SLICE", "STRIDED_SLICE", "CONCATENATION"], out.op_types()
    assert_exact(out)
