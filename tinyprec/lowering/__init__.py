"""Stage 2's second half: a converted PT2E graph (dequantize -> op -> quantize) -> the quantized IR.

The only place torch meets the IR. Modules, each importing only those listed before it:

- ``nodes``: the quantize/dequantize overloads and PyTorch dim -> IR axis;
- ``state``: :class:`~tinyprec.lowering.state.Lowering` (the IR under construction), the activations a
  producer fuses, a pending zero pad;
- ``common``: helpers every handler shares (arguments, constants, output values, reshapes);
- ``ops``, ``act``, ``more``, ``shape``: the handlers, by kind of op;
- ``table``: handler by name (the ``lowering`` column of :data:`tinyprec.optable.table.OPS`) and by aten overload;
- ``driver``: :func:`~tinyprec.lowering.driver.lower_to_ir` walks the graph through the table;
- ``check`` (the lowered graph against the fake-quant program), ``split`` (INT4 layers split by channels).

tests/test_architecture.py fails if a module imports one above it, or if this package imports ``tinyprec.quant``.
"""
