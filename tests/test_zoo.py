"""The model zoo: shapes, MLPerf Tiny parameter counts (against the reference .tflite files), TF SAME padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyprec.errors import RecipeError
from tinyprec.zoo import ARCHITECTURES, build_model, folded_param_count
from tinyprec.zoo._layers import same_pad_2d


def tflite_constant_count(data: bytes) -> int:
    """Elements of every tensor backed by a non-empty buffer in a .tflite (its constants)."""
    from tflite_micro.tensorflow.lite.micro.python.schema_py_generated import Model, ModelT

    model = ModelT.InitFromObj(Model.GetRootAsModel(data, 0))
    total = 0
    for tensor in model.subgraphs[0].tensors:
        buf = model.buffers[tensor.buffer]
        if buf.data is not None and len(buf.data) > 0:
            total += int(np.prod(tensor.shape))
    return total


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_forward_shape(arch: str) -> None:
    spec = ARCHITECTURES[arch]
    model = build_model(arch).eval()
    out = model(torch.randn(2, *spec.input_shape))
    assert tuple(out.shape) == (2, spec.num_classes)


def test_kws_matches_reference_tflite(kws_tflite: bytes) -> None:
    ref = tflite_constant_count(kws_tflite)
    assert ref == 22_606
    ours = folded_param_count(build_model("ds_cnn"))
    assert abs(ours - ref) / ref < 0.01, (ours, ref)


def test_ic_matches_reference_tflite(ic_tflite: bytes) -> None:
    ref = tflite_constant_count(ic_tflite)
    assert ref == 77_708
    ours = folded_param_count(build_model("resnet8"))
    assert abs(ours - ref) / ref < 0.01, (ours, ref)


def test_vww_and_ad_counts() -> None:
    vww = folded_param_count(build_model("mobilenet_v1", {"alpha": 0.25, "num_classes": 2}))
    assert abs(vww - 210_900) / 210_900 < 0.01, vww
    ad = folded_param_count(build_model("fc_autoencoder"))
    assert abs(ad - 265_864) / 265_864 < 0.01, ad


def test_folded_count_counts_bias_once_per_output() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, bias=False), torch.nn.BatchNorm2d(5), torch.nn.Linear(4, 2))
    assert folded_param_count(model) == (3 * 5 * 9 + 5) + (4 * 2 + 2)


def test_only_lowerable_modules() -> None:
    from torch import nn

    allowed = (
        nn.Sequential, nn.Conv1d, nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.MaxPool1d, nn.MaxPool2d,
        nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.ZeroPad2d, nn.Dropout,
        nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity,
    )
    for arch in ARCHITECTURES:
        for name, module in build_model(arch).named_modules():
            if type(module).__name__ == "ResidualBlock":
                continue
            assert isinstance(module, allowed), (arch, name, type(module))


def test_bad_arch_and_args_raise_recipe_error() -> None:
    with pytest.raises(RecipeError, match="unknown architecture 'nope'.*digits_cnn"):
        build_model("nope")
    with pytest.raises(RecipeError, match="model.args.depth.*allowed"):
        build_model("digits_cnn", {"depth": 3})
    with pytest.raises(RecipeError, match="model.args.input_hw"):
        build_model("resnet8", {"input_hw": 32})


@pytest.mark.parametrize(
    "hw,kernel,stride",
    [((49, 10), (10, 4), (2, 2)), ((32, 32), (3, 3), (2, 2)), ((96, 96), (3, 3), (2, 2)), ((7, 7), (3, 3), (2, 2))],
)
def test_same_pad_split(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> None:
    """Our split reproduces TF's SAME output size; the extra row/column goes bottom/right."""
    left, right, top, bottom = same_pad_2d(hw, kernel, stride)
    assert 0 <= top <= bottom <= top + 1 and 0 <= left <= right <= left + 1
    out_h = (hw[0] + top + bottom - kernel[0]) // stride[0] + 1
    out_w = (hw[1] + left + right - kernel[1]) // stride[1] + 1
    assert (out_h, out_w) == (-(-hw[0] // stride[0]), -(-hw[1] // stride[1]))


@pytest.mark.slow
def test_pad_conv_equals_tensorflow_same() -> None:
    """ds_cnn's first layer and a resnet8 stride-2 conv compute exactly what TF's padding='SAME' computes."""
    import tensorflow as tf

    torch.manual_seed(0)
    for arch in ("ds_cnn", "resnet8"):
        model = build_model(arch).eval()
        if arch == "ds_cnn":
            pad, conv = model[0], model[1]
            x = torch.randn(2, 1, 49, 10)
        else:
            block = model[4]  # stem conv, bn, relu, block 1, then the first stride-2 block
            pad, conv = block.body[0], block.body[1]
            x = torch.randn(2, 16, 32, 32)
        assert isinstance(pad, torch.nn.ZeroPad2d) and conv.padding == (0, 0)
        ours = conv(pad(x)).detach().numpy().transpose(0, 2, 3, 1)
        w = conv.weight.detach().numpy().transpose(2, 3, 1, 0)  # HWIO
        ref = tf.nn.conv2d(x.numpy().transpose(0, 2, 3, 1), w, strides=conv.stride, padding="SAME").numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
