"""Files from TensorFlow's own converter (TF 2.21): a 16x8 model (int16 activations) and an INT4-weight model
(4-bit fake quantization on the weights) read by tinyprec and emulated exactly as TFLM runs them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests._micro import run_tflm
from tinyprec.emulator import Emulator
from tinyprec.formats.tflite_reader import read_tflite

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")


def _converter_16x8() -> bytes:
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((12, 12, 3), batch_size=1)
    h = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = tf.keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")(h)
    h = tf.keras.layers.AveragePooling2D(2)(h)
    h = tf.keras.layers.Add()([h, tf.keras.layers.Conv2D(8, 1)(h)])
    h = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(h))
    model = tf.keras.Model(inp, tf.keras.layers.Softmax()(h))

    def representative():  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(0)
        for _ in range(32):
            yield [rng.normal(size=(1, 12, 12, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    return bytes(conv.convert())


def _converter_int4() -> bytes:
    """4-bit per-channel fake quant on conv / depthwise weights, per-tensor on the matmul, 8-bit activations."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 3, 8)).astype(np.float32)
    wd = rng.normal(size=(3, 3, 8)).astype(np.float32)
    wf = (rng.normal(size=(8 * 36, 10)) * 0.1).astype(np.float32)
    m, md, mf = np.abs(w).reshape(-1, 8).max(0), np.abs(wd).reshape(-1, 8).max(0), float(np.abs(wf).max())
    fq, fqv, fqc = (tf.quantization.fake_quant_with_min_max_args, tf.quantization.fake_quant_with_min_max_vars,
                    tf.quantization.fake_quant_with_min_max_vars_per_channel)

    @tf.function(input_signature=[tf.TensorSpec((1, 12, 12, 3), tf.float32)])
    def f(x):  # type: ignore[no-untyped-def]
        y = tf.nn.relu(tf.nn.conv2d(fq(x, -3.0, 3.0), fqc(w, -m, m, num_bits=4, narrow_range=True), 1, "SAME"))
        wdq = tf.reshape(fqc(wd, -md, md, num_bits=4, narrow_range=True), (3, 3, 8, 1))
        y = fq(tf.nn.depthwise_conv2d(fq(y, 0.0, 6.0), wdq, [1, 2, 2, 1], "SAME"), -10.0, 10.0)
        y = tf.matmul(tf.reshape(y, (1, -1)), fqv(wf, -mf, mf, num_bits=4, narrow_range=True))
        return fq(y, -10.0, 10.0)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return bytes(conv.convert())


@pytest.mark.parametrize(("build", "kind", "precision"), [
    (_converter_16x8, "int16x8", "w8a16"), (_converter_int4, "int8", "w4a8"),
])
def test_tensorflow_converter_files_emulate_exactly(build, kind: str, precision: str) -> None:  # type: ignore[no-untyped-def]
    data = build()
    graph = read_tflite(data, where="converted.tflite")
    assert (graph.metadata["kind"], graph.precision()) == (kind, precision)
    dtype = graph.tensors[graph.inputs[0]].dtype.numpy
    info = np.iinfo(dtype)
    x = np.random.default_rng(1).integers(info.min, info.max + 1, size=(16, 12, 12, 3)).astype(dtype)
    expected = run_tflm(data, [x])
    np.testing.assert_array_equal(Emulator(graph).run(x), expected)
    assert len(np.unique(expected)) > 10
