"""tinyprec.quant: stage 2, quantization to the TFLite int8 spec (QAT or PTQ) with torchao PT2E, with int4
weights and int16 activations per layer where asked.

API: :func:`quantize_model` -> :class:`QuantResult`, :func:`load_converted`, :func:`check_supported`.
torch and torchao load only when one of them is first used.

The converted program (``QuantResult.converted``; ``load_converted(out_dir)`` from quant/converted.pt2) is a
``torch.fx.GraphModule`` made by ``convert_pt2e(fold_quantize=True)`` and tidied. Its nodes, exactly:

* one ``placeholder`` (the float input, NCHW / NCL / NF, dynamic batch) followed by
  ``quantized_decomposed.quantize_per_tensor.default(x, scale: float, zp: int, -128, 127, torch.int8)``;
* every activation edge is ``quantize_per_tensor`` -> ``dequantize_per_tensor.default`` (same args); each
  consumer has its own dequantize (torchao duplicates them), all with the producer's qparams;
* weights: ``get_attr`` of an int8 tensor (torch layout: conv OIHW / OIL, depthwise O1HW, linear OI) ->
  ``dequantize_per_channel.default(w, scales: get_attr f32[O], zps: get_attr i64[O], 0, -127, 127,
  torch.int8)`` (axis 0 = output channel; per-tensor weights, when ``per_channel = false``, use
  ``dequantize_per_tensor`` with zp 0 and range [-127, 127]);
* biases: ``get_attr`` int32[O] -> ``dequantize_per_channel(b, scales f32[O], zps 0, 0, -2**31, 2**31-1,
  torch.int32)`` with scale[c] = input_scale * weight_scale[c] computed in float32. Every conv/linear has one
  (zeros where the model had none; batch norm is folded into it);
* compute: ``aten.conv1d.default``, ``aten.conv2d.default`` (groups == channels for depthwise),
  ``aten.linear.default``; fused activations ``aten.relu.default`` / ``aten.relu_.default`` /
  ``aten.hardtanh.default(x, 0.0, 6.0)`` sit between the compute op and its output quantize (no Q/DQ in
  between). ``aten.add.Tensor`` / ``aten.mul.Tensor`` take two dequantized inputs with their own qparams
  and may be followed by a fused relu the same way. A ReLU that cannot be fused is a standalone op with
  its own output qparams;
* same qparams in and out: ``aten.max_pool1d/2d``, ``aten.avg_pool1d/2d``, ``aten.adaptive_avg_pool1d/2d``
  (to 1), ``aten.mean.dim`` (spatial), ``aten.flatten.using_ints``, ``aten.view.default``,
  ``aten.reshape.default``, ``aten.pad.default`` / ``aten.constant_pad_nd.default`` (zeros), and
  ``aten.cat.default`` (all inputs share the output's qparams; a producer with fixed qparams feeding cat
  gets a requantizing dequantize -> quantize pair);
* fixed output qparams: ``aten.softmax.int`` / ``aten._softmax.default`` and ``aten.sigmoid.default``
  (1/256, -128), ``aten.tanh.default`` (1/128, 0);
* ``aten.sym_size.int`` (dynamic batch in view/reshape) may appear; no batch_norm, no dropout, no
  observers remain;
* the ``output`` returns the last ``dequantize_per_tensor`` (its qparams are the int8 output's);
* with per-layer precision (:mod:`tinyprec.quant.bits`): a 16-bit activation edge is
  ``quantize_per_tensor(x, scale, 0, -32767, 32767, torch.int16)`` -> ``dequantize_per_tensor`` (same args),
  a 4-bit weight ``dequantize_per_channel(w int8, ..., -7, 7, torch.int8)``; where neighbouring layers differ,
  ``dequantize`` (int8) -> ``quantize`` (int16) or back appears between them (a QUANTIZE op in the IR). Biases
  stay int32 in the program (the IR widens them to INT64 for int16 inputs).

Aten nodes keep ``meta['nn_module_stack']`` of the user's model (:func:`tinyprec.quant.capture.module_path`);
quantize/dequantize nodes do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyprec.quant.capture import check_supported
    from tinyprec.quant.converted import load_converted
    from tinyprec.quant.stage import QuantResult, quantize_model

_LAZY = {
    "quantize_model": "tinyprec.quant.stage",
    "QuantResult": "tinyprec.quant.stage",
    "load_converted": "tinyprec.quant.converted",
    "check_supported": "tinyprec.quant.capture",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tinyprec.quant' has no attribute {name!r}")


__all__ = ["QuantResult", "check_supported", "load_converted", "quantize_model"]
