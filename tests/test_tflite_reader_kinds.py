"""Float, hybrid (dynamic-range) and full-int8 models from TensorFlow's own converter.

The reader names each kind; the emulator refuses float and hybrid models with an explanation and
runs the int8 one bit-exactly against TFLM (a converter-made multi-op model: CONV, DEPTHWISE, TANH,
AVERAGE_POOL, RESHAPE, FULLY_CONNECTED, SOFTMAX).
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyprec.emulator import Emulator
from tinyprec.errors import ModelFormatError
from tinyprec.formats.tflite_reader import read_tflite
from tinyprec.runtimes.tflm import run_tflm


@pytest.fixture(scope="session")
def converted_models() -> dict[str, bytes]:
    import warnings

    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((10, 8, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = tf.keras.layers.Conv2D(5, 1, activation="tanh")(x)
    x = tf.keras.layers.AveragePooling2D(2)(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(64, activation="relu")(x)  # 1280 weights: dynamic range quantizes it
    out = tf.keras.layers.Softmax()(tf.keras.layers.Dense(7)(x))
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(1, 10, 8, 3)).astype(np.float32) for _ in range(16)]
    result = {}
    for kind in ("float", "hybrid", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind != "float":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "int8":
            conv.representative_dataset = lambda: ([s] for s in samples)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result[kind] = conv.convert()
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "hybrid"])
def test_float_and_hybrid_are_named_and_refused(converted_models: dict[str, bytes], kind: str) -> None:
    graph = read_tflite(converted_models[kind], where=f"{kind}.tflite")
    assert graph.metadata["kind"] == kind
    with pytest.raises(ModelFormatError, match=f"it is a {kind}") as info:
        Emulator(graph)
    assert "full integer quantization" in str(info.value)


@pytest.mark.slow
def test_converter_int8_model_is_bit_exact(converted_models: dict[str, bytes]) -> None:
    data = converted_models["int8"]
    graph = read_tflite(data)
    assert graph.metadata["kind"] == "int8"
    emu = Emulator(graph)
    shape, _ = emu.input_spec()
    x = np.random.default_rng(1).integers(-128, 128, size=(24, *shape)).astype(np.int8)
    np.testing.assert_array_equal(emu.run(x), run_tflm(data, x))
