"""Issue 11's acceptance architecture "a one-block attention model with LayerNorm", written as users write it
(nn.Linear on (N, T, F), pre-LN, q @ k.transpose(-2, -1) * scale, softmax(dim=-1), residuals, a GELU MLP, mean
over tokens), through tinyprec.train / quantize (QAT) / export / validate: TFLM == emulator and TFLM == the
TFLM-exact program on 100% of outputs, TF Lite's reference kernels == TFLM on the exported file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._api_e2e import assert_tflite_reference_matches_tflm, train_to_tflite

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyTransformer(nn.Module):
    """Token embedding, one pre-LN self-attention block and a pre-LN MLP block, mean over tokens, head."""

    def __init__(self, features: int = 6, d: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.scale = d ** -0.5
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F)
        h = self.embed(x)
        a = self.ln1(h)
        q, k, v = self.q(a), self.k(a), self.v(a)
        scores = q @ k.transpose(-2, -1) * self.scale
        h = h + torch.softmax(scores, dim=-1) @ v
        h = h + self.mlp(self.ln2(h))
        return self.head(h.mean(dim=1))


def _data(n: int = 160, tokens: int = 8, features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Four classes told apart by which token positions carry a bump in which features."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, tokens, features)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 2 * c: 2 * c + 2, c % features] += 3.0
    return x, y


@pytest.mark.slow
def test_one_block_transformer_runs_exact_through_the_api(tmp_path: Path) -> None:
    torch.manual_seed(0)
    blob, graph = train_to_tflite(TinyTransformer(), _data(), tmp_path / "transformer")
    types = [op.type.value for op in graph.ops]
    assert {"RSQRT", "BATCH_MATMUL", "SOFTMAX", "CONV_2D", "LOGISTIC", "SUB"} <= set(types), types
    assert types.count("RSQRT") == 2 and "FULLY_CONNECTED" not in types, types
    assert_tflite_reference_matches_tflm(blob, graph)


class MultiHeadTransformer(TinyTransformer):
    """The same block with two heads split as users write it: view(N, T, H, D).transpose(1, 2), (N, H, T, T)
    scores, softmax(dim=-1), heads merged by transpose(1, 2).reshape(N, T, H * D), then a projection."""

    def __init__(self, heads: int = 2, **kwargs: int) -> None:
        super().__init__(**kwargs)
        d = self.q.out_features
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        n, t, d = h.shape
        a = self.ln1(h)
        q, k, v = (m(a).view(n, t, self.heads, d // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(n, t, d)
        h = h + self.proj(o)
        h = h + self.mlp(self.ln2(h))
        return self.head(h.mean(dim=1))


@pytest.mark.slow
def test_multi_head_transformer_runs_exact_through_the_api(tmp_path: Path) -> None:
    torch.manual_seed(0)
    blob, graph = train_to_tflite(MultiHeadTransformer(), _data(), tmp_path / "multi_head")
    types = [op.type.value for op in graph.ops]
    assert types.count("BATCH_MATMUL") == 2 and types.count("RSQRT") == 2, types
    matmuls = [op for op in graph.ops if op.type.value == "BATCH_MATMUL"]
    assert all(graph.tensors[op.outputs[0]].shape[1] == 2 for op in matmuls)  # (N, heads, ., .)
    assert_tflite_reference_matches_tflm(blob, graph)


class PaddedTokens(nn.Module):
    """The last two of eight tokens zeroed (padding frames) before a LayerNorm: their variance is 0, so QAT's
    float program meets 1/sqrt(0); it must train without NaN and convert exactly (TFLM's RSQRT gives 127)."""

    def __init__(self, features: int = 6, d: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.embed, self.norm, self.head = nn.Linear(features, d, bias=False), nn.LayerNorm(d), nn.Linear(d, classes)
        self.register_buffer("mask", torch.tensor([1.0] * 6 + [0.0] * 2).reshape(1, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(x) * self.mask).mean(dim=1))


@pytest.mark.slow
def test_layer_norm_of_padding_tokens_trains_and_converts_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    blob, graph = train_to_tflite(PaddedTokens(), _data(), tmp_path / "padded")
    rsqrt = next(op for op in graph.ops if op.type.value == "RSQRT")
    assert np.isfinite(graph.tensors[rsqrt.outputs[0]].qparams.scale).all()
    assert_tflite_reference_matches_tflm(blob, graph)
