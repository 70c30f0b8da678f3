"""The aten-op table: for every PyTorch op we convert, the quantizer's role, the lowering handler, the TFLM op,
what a user writes, its caveat and the check the op check runs before training.

Torch-free and below both ``tinyprec.quant`` (the quantizer's roles, the op check) and ``tinyprec.lowering``
(the handlers), so one table drives both and they cannot disagree. ``doc`` renders the README's op table.
"""
