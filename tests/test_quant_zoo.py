"""Stage 2 on every zoo architecture: prepare for QAT, train one step, convert, and the converted program
is int8 end to end (no batch norm, int8 weights, int32 biases) and runs on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyprec.recipe import QuantConfig
from tinyprec.zoo import ARCHITECTURES, build_model

CFG = QuantConfig(mode="qat", epochs=1, batch_size=4, autocast="fp32")
# the same layers on a smaller image keep the test fast (MobileNetV1 at 96x96 is ~25 s on a loaded CPU)
SMALLER = {"mobilenet_v1": ({"input_hw": (32, 32)}, (3, 32, 32))}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_zoo_architecture_quantizes(arch):
    from tinyprec.quant.capture import example_like
    from tinyprec.quant.loops import run_qat
    from tinyprec.quant.stage import _convert, _prepare

    spec = ARCHITECTURES[arch]
    args, shape = SMALLER.get(arch, ({}, spec.input_shape))
    torch.manual_seed(0)
    model = build_model(arch, args)
    prepared = _prepare(model.train(), example_like(shape), qat=True, cfg=CFG)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, *shape)).astype(np.float32)
    y = np.arange(4) % spec.num_classes
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    log = run_qat(prepared, x, y, task=spec.task, epochs=1, lr=1e-3, batch_size=4, freeze_bn_epoch=1,
                  freeze_observer_epoch=1, precision="fp32", seed=0, max_steps=1)
    assert log.steps == 1 and np.isfinite(log.losses[0])
    assert any(not torch.equal(p, before[n]) for n, p in prepared.named_parameters())
    program = _convert(prepared, qat=True)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "batch_norm" in t or "dropout" in t]
    computes = [n for n in program.graph.nodes if str(n.target).startswith(("aten.conv", "aten.linear"))]
    assert computes
    for node in computes:
        w = getattr(program, node.args[1].args[0].target)
        b = getattr(program, node.args[2].args[0].target)
        assert w.dtype == torch.int8 and b.dtype == torch.int32
    out = program(torch.from_numpy(x))
    expected = (4, spec.num_classes) if spec.task == "classification" else (4, *shape)
    assert tuple(out.shape) == expected and torch.isfinite(out).all()
