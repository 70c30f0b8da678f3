"""The op check before training: every refused op at once, with module path, the user's line and a fix;
ops the lowering handles are accepted by the quantizer and convert exactly (issue 11, step 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from _ops_e2e import assert_exact, run_everywhere  # noqa: E402

from tinyprec.errors import UnsupportedOpError, UnsupportedOpsError  # noqa: E402


class SixRefusals(nn.Module):
    """A bidirectional GRU (decomposed by torch.export into zeros + gru), a grouped conv, an amax over every
    dim, a div by a tensor and a LayerNorm over two dims are refused, each named once; a scalar add, a
    transpose, a Linear on the (N, T, F) sequence and a mean over time convert."""

    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv1d(4, 4, 3, padding=1, groups=2)
        self.rnn = nn.GRU(4, 3, batch_first=True, bidirectional=True)  # unidirectional: tests/test_recurrent.py
        self.norm = nn.LayerNorm((10, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.grouped(x) + 1.0
        y = y / torch.clamp(y.abs().amax(), min=1.0)
        seq, _ = self.rnn(y.transpose(1, 2))
        return self.head(self.norm(seq)).mean(1)


def test_every_refused_op_at_once_with_module_line_and_fix() -> None:
    from tinyprec.quant.opcheck import check_model_ops

    with pytest.raises(UnsupportedOpsError) as info:
        check_model_ops(SixRefusals(), torch.zeros(2, 4, 10))
    err = info.value
    ops = [r.op for r in err.refusals]
    assert "GRU" in ops and "zeros" not in ops and "gru" not in ops  # the layer, not its parts
    assert ops.count("GRU") == 1 and "layer_norm" in ops and "conv1d" in ops and "amax" in ops
    assert "div" in ops
    assert "add" not in ops and "mean" not in ops and "transpose" not in ops and "linear" not in ops  # these convert
    lines = str(err).splitlines()
    assert len(lines) == len(err.refusals) + 1 and str(len(err.refusals)) in lines[0]
    me = Path(__file__).name
    by_op = {r.op: r for r in err.refusals}
    assert "module 'rnn' (GRU)" in by_op["GRU"].where and f"{me}:" in by_op["GRU"].where
    assert "self.rnn(" in by_op["GRU"].where and "bidirectional=False" in by_op["GRU"].hint  # the user's own source line, not torch's
    assert "module 'grouped'" in by_op["conv1d"].where and "groups" in by_op["conv1d"].hint
    assert "module 'norm'" in by_op["layer_norm"].where and "last dim" in by_op["layer_norm"].hint
    assert "constant number" in by_op["div"].hint and "every dim" in by_op["amax"].hint
    assert all(r.hint for r in err.refusals)
    assert isinstance(err, UnsupportedOpError) and err.exit_code == 2


def test_train_refuses_before_training(tmp_path: Path) -> None:
    import tinyprec
    from tinyprec.recipe import TrainConfig

    x = np.random.default_rng(0).normal(size=(16, 4, 10)).astype(np.float32)
    with pytest.raises(UnsupportedOpsError, match="GRU"):
        tinyprec.train(SixRefusals(), (x, np.arange(16) % 3), config=TrainConfig(epochs=1, precision="fp32"),
                       out_dir=tmp_path)
    assert not (tmp_path / "train").exists()


def test_cli_train_and_run_exit_2_listing_every_op(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from _cli import run_cli

    (tmp_path / "mymodel.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.rnn = nn.LSTM(8, 4, batch_first=True, bidirectional=True)\n"
        "        self.fc = nn.Linear(8, 4)\n\n"
        "    def forward(self, x):\n"
        "        y, _ = self.rnn(x.squeeze(1))\n"
        "        return self.fc(torch.nn.functional.softplus(y[:, -1]))\n\n"
        "def build():\n    return Net()\n")
    (tmp_path / "r.toml").write_text(
        '[model]\nmodule = "mymodel.py:build"\n[data]\nname = "synthetic"\nshape = [1, 8, 8]\n'
        'num_classes = 4\nsamples = 32\n[train]\nepochs = 1\nprecision = "fp32"\n')
    for cmd in (["train"], ["run"]):
        code, out, err = run_cli([*cmd, str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")], capsys)
        assert code == 2, (out, err)
        assert "'LSTM' at module 'rnn'" in err and "mymodel.py:11" in err and "'softplus'" in err, err
        assert not (tmp_path / "o" / "train" / "model_fp32.pt").exists()


class Agree(nn.Module):
    """What the lowering always had and the quantizer used to refuse: F.relu6, s[:, :, None, None]
    (unsqueeze + full slice), conv padding='same' (odd and even kernel), Hardtanh(-1, 1), concat."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding="same")
        self.b = nn.Conv2d(4, 4, 2, padding="same")
        self.c = nn.Conv2d(8, 4, 1, padding="valid")
        self.clip = nn.Hardtanh(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu6(self.a(x))
        b = self.clip(self.b(a))
        s = a.mean((2, 3))
        a = a * s[:, :, None, None]
        return self.c(torch.concat([a, b], dim=1))


def test_quantizer_and_lowering_agree_on_what_the_lowering_has() -> None:
    out = run_everywhere(Agree(), (2, 6, 6))
    assert out.op_types().count("CONV_2D") == 3
    assert_exact(out)


def test_model_torch_export_cannot_capture_is_one_line() -> None:
    from tinyprec.quant.opcheck import check_model_ops

    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # Python control flow on a tensor value
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(UnsupportedOpError, match=r"torch.export cannot capture it") as info:
        check_model_ops(DataDependent(), torch.zeros(2, 4))
    assert "\n" not in str(info.value)
