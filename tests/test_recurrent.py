"""nn.GRU / nn.LSTM unrolled over time (quant/recurrent.py): equal to PyTorch's layers in float, exact on every
int8 runtime, one stored copy of each weight, clear refusals of the forms not unrolled, and two keyword-style
sequence models through tinyprec.train / quantize (QAT) / export / validate."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402

from tests._api_e2e import assert_tflite_reference_matches_tflm, train_to_tflite  # noqa: E402
from tinyprec.errors import UnsupportedOpError, UnsupportedOpsError  # noqa: E402

# Trains or quantizes under the auto precision policy: CI reruns it with the CPU's bf16 detection flipped.
pytestmark = pytest.mark.trains


class Keyword(nn.Module):
    """(N, T, F) frames -> a GRU or LSTM -> the last step's h -> classes (the usual KWS / sensor head)."""

    def __init__(self, kind: str, features: int = 8, hidden: int = 16, layers: int = 1, classes: int = 10,
                 bias: bool = True) -> None:
        super().__init__()
        self.rnn = getattr(nn, kind)(features, hidden, num_layers=layers, batch_first=True, bias=bias)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class LastState(nn.Module):
    """Reads h_n[-1] (GRU) or (h_n, c_n) (LSTM) and averages the whole output sequence (a CONCATENATION)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = getattr(nn, kind)(5, 6, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1] + out.mean(1))


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_unrolled_layer_equals_pytorch_in_float(kind: str, layers: int, bias: bool) -> None:
    from tinyprec.quant.recurrent import unroll_recurrent

    torch.manual_seed(layers)
    model = Keyword(kind, features=6, hidden=12, layers=layers, bias=bias).eval()
    twin, refused = unroll_recurrent(model)
    assert not refused and type(twin.rnn).__name__ == f"Unrolled{kind}" and type(model.rnn).__name__ == kind
    assert dict(twin.state_dict()).keys() == dict(model.state_dict()).keys()  # QAT reads the weights back by name
    x = torch.randn(7, 11, 6)
    with torch.no_grad():
        want, got = model.rnn(x), twin.rnn(x)
    flat = lambda o: [t for item in o for t in (item if isinstance(item, tuple) else (item,))]  # noqa: E731
    for w, g in zip(flat(want), flat(got)):
        assert w.shape == g.shape
        assert float((w - g).abs().max()) < 1e-6


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_unrolled_layer_is_exact_on_every_runtime(kind: str) -> None:
    torch.manual_seed(0)
    out = run_everywhere(Keyword(kind, features=6, hidden=8, layers=2, classes=3), (6, 6))
    assert_exact(out)
    ops = Counter(out.op_types())
    assert ops["CONV_2D"] == 2 * 6 + 2 * 5 + 1  # per layer: one input product per step, recurrent from step 2
    assert {"LOGISTIC", "TANH", "MUL", "ADD", "STRIDED_SLICE"} <= set(ops)
    readers = Counter(op.inputs[1] for op in out.graph.ops if op.type.value == "CONV_2D")
    assert sorted(readers.values()) == [1, 5, 5, 6, 6]  # W_ih, W_hh of each layer stored once, read by every step


class ReluRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(5, 8, batch_first=True, nonlinearity="relu")
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[1].squeeze(0))


def test_elman_rnn_with_relu_is_exact_and_fuses_the_relu() -> None:
    from tinyprec.quant.recurrent import unroll_recurrent

    torch.manual_seed(2)
    model = ReluRNN().eval()
    x = torch.randn(4, 6, 5)
    with torch.no_grad():
        assert float((model(x) - unroll_recurrent(model)[0](x)).abs().max()) < 1e-6
    out = run_everywhere(model, (6, 5))
    assert_exact(out)
    assert Counter(out.op_types()) == {"CONV_2D": 6 + 5 + 1, "ADD": 5, "STRIDED_SLICE": 6, "RESHAPE": 1}


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_final_state_and_whole_sequence_outputs(kind: str) -> None:
    torch.manual_seed(1)
    out = run_everywhere(LastState(kind), (4, 5))
    # ONNX Runtime runs QDQ in float (<= 1 LSB per op from TFLM); a recurrence feeds each step's LSB into the next
    # (measured 2 and 3 LSB with two calibration orders: a bound on float drift, not on the integer runtimes)
    assert_exact(out, onnx_lsb=3)
    assert "CONCATENATION" in out.op_types()


class GivesState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 4, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(1, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x, self.h0.expand(1, x.shape[0], 4).contiguous())[0].mean(1)


class Refused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bi = nn.GRU(4, 4, batch_first=True, bidirectional=True)
        self.proj = nn.LSTM(8, 6, batch_first=True, proj_size=3)
        self.time_first = nn.LSTM(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.proj(self.bi(x)[0])
        return self.time_first(y.transpose(0, 1))[0].mean(0)


def test_forms_not_unrolled_are_refused_each_with_its_reason() -> None:
    from tinyprec.quant.opcheck import check_model_ops

    with pytest.raises(UnsupportedOpsError) as info:
        check_model_ops(Refused(), torch.zeros(2, 5, 4))
    by_where = {r.where.split("'")[1]: r for r in info.value.refusals if r.op in ("GRU", "LSTM")}
    assert set(by_where) == {"bi", "proj", "time_first"}, info.value
    assert "bidirectional=False" in by_where["bi"].hint and by_where["bi"].op == "GRU"
    assert "proj_size=0" in by_where["proj"].hint and "batch_first=True" in by_where["time_first"].hint
    assert "test_recurrent.py:" in by_where["bi"].where  # the user's own line
    with pytest.raises(UnsupportedOpError, match="zero state; call it with x only") as one:
        check_model_ops(GivesState(), torch.zeros(2, 5, 4))
    assert "module 'rnn' (GRU)" in str(one.value) and len(str(one.value).splitlines()) == 1


def _digit_sequences() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits read row by row: 8 time steps of 8 features, 10 classes (a keyword-like task)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_keyword_model_runs_exact_through_the_api(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    out = tmp_path / kind
    blob, graph = train_to_tflite(Keyword(kind, hidden=32), _digit_sequences(), out, epochs=12)
    assert_tflite_reference_matches_tflm(blob, graph)
    report = json.loads((out / "report" / "report.json").read_text())
    acc = report["accuracy"]
    print(kind, {k: round(v, 2) for k, v in acc.items() if isinstance(v, float)}, len(blob), "bytes",
          len(graph.ops), "ops")
    assert acc["fp32"] > 88.0 and acc["tflm"] > acc["fp32"] - 3.0, acc  # measured: 93.0 / 93.3 (GRU), 93.6 / 93.0


@pytest.mark.slow
def test_int16_lstm_keyword_model_runs_exact_through_the_api(tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "lstm16"
    blob, graph = train_to_tflite(Keyword("LSTM", hidden=32), _digit_sequences(), out, epochs=12,
                                  overrides=(("rnn", "a16w8"),))
    ops = _dtypes(graph)
    assert ops[("CONV_2D", "int16")] == 8 + 7 and ops[("MUL", "int16")] == 8 * 2 + 7, ops
    report = json.loads((out / "report" / "report.json").read_text())
    acc = report["accuracy"]
    print("LSTM a16w8", {k: round(v, 2) for k, v in acc.items() if isinstance(v, float)}, len(blob), "bytes",
          len(graph.ops), "ops")
    assert acc["fp32"] > 88.0 and acc["tflm"] > acc["fp32"] - 3.0, acc


@pytest.mark.parametrize("qat", [False, True])
def test_one_observer_per_weight_in_the_pt2e_program(qat: bool) -> None:
    from tinyprec.quant.stage import _prepare
    from tinyprec.recipe import QuantConfig

    prepared = _prepare(Keyword("GRU", hidden=8, layers=2).train(qat), torch.zeros(2, 8, 8), qat=qat,
                        cfg=QuantConfig())
    observers = {str(n.target): {u.target for u in n.users if u.op == "call_module"}
                 for n in prepared.graph.nodes if n.op == "get_attr" and str(n.target).endswith("weight_ih_l1")}
    assert len(observers) == 1 and len(next(iter(observers.values()))) == 1, observers  # one for all 8 steps
    readers = [n for n in prepared.graph.nodes if n.target is torch.ops.aten.linear.default]
    assert len(readers) == 2 * 8 + 2 * 7 + 1


def test_int4_weights_run_exact() -> None:
    from tinyprec.data import Dataset
    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.quant.exact import tflm_exact
    from tinyprec.lowering.driver import lower_to_ir
    from tinyprec.lowering.check import quantize_input, reference_output
    from tinyprec.ir.layout import to_ir_layout
    from tinyprec.quant.stage import ptq
    from tinyprec.recipe import QuantConfig
    from tinyprec.runtimes.tflm import run_tflm

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 6, 6)).astype(np.float32)
    ds = Dataset.from_arrays(x, np.arange(64) % 2, num_classes=2, seed=0)
    cfg = QuantConfig(mode="ptq", batch_size=16, calibration_batches=4, autocast="fp32", bits="w4a8")
    converted = ptq(Keyword("GRU", features=6, hidden=8, classes=3).eval(), ds, cfg)
    graph = lower_to_ir(converted, torch.from_numpy(x[:2]), name="gru_w4a8")
    assert {t.dtype.value for t in graph.tensors.values() if t.name.startswith("rnn.weight")} == {"int4"}
    q = quantize_input(x, graph.tensors[graph.inputs[0]].qparams)
    x_ir = to_ir_layout(q, graph.metadata["input_layout"])
    tflm = np.asarray(run_tflm(write_tflite(graph), x_ir)).reshape(len(q), -1)
    np.testing.assert_array_equal(Emulator(graph).run(x_ir).reshape(tflm.shape), tflm)
    np.testing.assert_array_equal(reference_output(tflm_exact(converted), graph, q).reshape(tflm.shape), tflm)


def _dtypes(graph: object) -> Counter:
    return Counter((op.type.value, graph.tensors[op.outputs[0]].dtype.value) for op in graph.ops)  # type: ignore


@pytest.mark.parametrize(("kind", "layers"), [("LSTM", 1), ("LSTM", 2), ("RNN", 1), ("GRU", 1), ("GRU", 2)])
def test_int16_recurrent_layers_are_exact_with_an_int16_state(kind: str, layers: int) -> None:
    """a16w8 on the recurrent layer, int8 head: every gate op, the cell state c and h are int16 (TFLM's 16x8
    CONV_2D, int16 STRIDED_SLICE / ADD / SUB / MUL / LOGISTIC / TANH; GRU's step-1 b_hh an int16 constant
    operand); QUANTIZE int8 -> int16 feeds each step's input product and int16 -> int8 the head.
    TFLM == emulator == tflm_exact on every output."""
    torch.manual_seed(layers)
    model = Keyword(kind, features=6, hidden=8, layers=layers, classes=3)
    out = run_everywhere(model, (6, 6), n=320, overrides=(("rnn", "a16w8"),))
    assert_exact(out, tflite=False)  # TF Lite refuses QUANTIZE int8 -> int16 (test_emulator_lowbits.py)
    ops = _dtypes(out.graph)
    assert ops[("CONV_2D", "int16")] == layers * 6 + layers * 5 and ops[("CONV_2D", "int8")] == 1
    assert ops[("TANH", "int16")] == (layers * 6 * 2 if kind == "LSTM" else layers * 6)
    if kind == "LSTM":
        assert ops[("LOGISTIC", "int16")] == layers * (6 * 2 + 5) and ops[("STRIDED_SLICE", "int16")] > 0
        assert ops[("MUL", "int16")] == layers * (6 * 2 + 5) and not {k for k in ops if k[0] in ("MUL", "LOGISTIC")
                                                                      and k[1] == "int8"}
    if kind == "GRU":  # h = n + z * (h - n); step 1: n - z * n and the b_hh constant operands, all int16
        assert ops[("SUB", "int16")] == layers * 6 and ops[("LOGISTIC", "int16")] == layers * 6
        consts = {out.graph.tensors[n].dtype.value for op in out.graph.ops if op.type.value in ("ADD", "MUL")
                  for n in op.inputs if out.graph.tensors[n].data is not None}
        assert consts == {"int16"}, consts
    assert ops[("QUANTIZE", "int8")] == 1 and ops[("QUANTIZE", "int16")] == 6
    assert out.tflm.shape == (64, 3) and len(np.unique(out.tflm)) > 20  # 320 samples, the 20% test split
    assert out.onnx is not None and int(np.abs(out.onnx.astype(int) - out.tflm.astype(int)).max()) <= 2
