"""The loops of stage 2: QAT fine-tuning, PTQ calibration and evaluation of a (prepared/converted) program.

QAT runs under the stage-1 mixed-precision policy (autocast); fake quantization itself runs in float32
(observers.Float32FakeQuantize), parameters stay float32 master weights. Batch-norm statistics freeze
after ``freeze_bn_epoch`` (the exported batch_norm ops switch to running statistics) and observers
after ``freeze_observer_epoch`` (scales stop moving; weights keep training against them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx

from tinyprec.errors import TinyprecError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class QatLog:
    """What a QAT run did: per-epoch mean training loss and validation score, the epoch whose weights
    and scales were kept (best validation score; the last epoch without validation data), and when BN
    and observers froze (0-based epochs)."""

    losses: tuple[float, ...]
    steps: int
    bn_frozen_at: int | None
    observers_frozen_at: int | None
    val_scores: tuple[float, ...] = ()
    best_epoch: int | None = None


def _precision_api() -> tuple[Callable[..., str], Callable[..., Any], Callable[..., Any] | None]:
    """Stage 1's precision policy (helper A's tinyprec.training), so QAT uses the same rules."""
    from tinyprec.training import precision as p

    return p.select_precision, p.autocast_context, getattr(p, "make_grad_scaler", None)


def select_precision(policy: str, device: str) -> str:
    """Resolve "auto"/"bf16"/"fp16"/"fp32" exactly as stage 1 does."""
    return _precision_api()[0](policy, device)


def batches(n: int, batch_size: int, *, shuffle: bool, rng: np.random.Generator | None = None):
    """Index arrays of at most ``batch_size`` covering range(n), shuffled with ``rng`` if asked."""
    order = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _loss(task: str, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = out.float()
    if task == "autoencoder":
        return torch.nn.functional.mse_loss(out, x.reshape(out.shape))
    return torch.nn.functional.cross_entropy(out, y)


def better(task: str, a: float, b: float) -> bool:
    """Is score ``a`` strictly better than ``b`` (accuracy: higher; autoencoder MSE: lower)?"""
    return a < b if task == "autoencoder" else a > b


@contextmanager
def fake_quant_eval(prepared: fx.GraphModule) -> Iterator[fx.GraphModule]:
    """Evaluate a QAT program as it would convert: BN on running statistics, no dropout, observers paused."""
    from torchao.quantization.pt2e import FakeQuantizeBase

    from tinyprec.quant.bnfold import set_train_mode

    fqs = [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]
    flags = [m.observer_enabled.clone() for m in fqs]
    for m in fqs:
        m.disable_observer()
    set_train_mode(prepared, bn_train=False, dropout_train=False)
    try:
        yield prepared
    finally:
        for m, flag in zip(fqs, flags):
            m.observer_enabled.copy_(flag)


def run_qat(prepared: fx.GraphModule, x: np.ndarray, y: np.ndarray, *, task: str, epochs: int, lr: float,
            batch_size: int, freeze_bn_epoch: int, freeze_observer_epoch: int, precision: str, seed: int,
            max_steps: int | None = None, val: tuple[np.ndarray, np.ndarray] | None = None,
            warmup_batches: int = 0, progress: Progress | None = None) -> QatLog:
    """Fine-tune a QAT program (prepared by stage 2) in place on normalized inputs ``x`` (labels ``y``).

    With ``val`` (inputs, labels) the fake-quant program is scored after every epoch and the best epoch's
    weights, BN statistics and scales are restored at the end. ``warmup_batches`` batches first set the
    activation ranges with the FP32 weights' statistics (BN on running statistics, no weight update), so
    fine-tuning starts from calibrated ranges instead of the first batch's.
    """
    import tinyprec.quant._quiet_torchao  # noqa: F401
    from torchao.quantization.pt2e import disable_observer

    from tinyprec.quant.bnfold import set_train_mode

    _, autocast_context, make_grad_scaler = _precision_api()
    device = "cpu"
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    if warmup_batches:
        _warm_up_observers(prepared, xt, batch_size=batch_size, num_batches=warmup_batches)
    _init_learned_scales(prepared, xt[:batch_size])  # LSQ scales are parameters: shaped before the optimizer
    params = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scaler = make_grad_scaler(precision, device) if make_grad_scaler else None
    losses: list[float] = []
    scores: list[float] = []
    best_epoch: int | None = None
    best_state: dict[str, Any] | None = None
    steps = 0
    bn_at = obs_at = None
    for epoch in range(epochs):
        frozen = epoch >= freeze_bn_epoch
        set_train_mode(prepared, bn_train=not frozen, dropout_train=True)
        if frozen:
            bn_at = epoch if bn_at is None else bn_at
        if epoch >= freeze_observer_epoch:
            prepared.apply(disable_observer)
            obs_at = epoch if obs_at is None else obs_at
        total, count = 0.0, 0
        for idx in batches(len(xt), batch_size, shuffle=True, rng=rng):
            if len(idx) < 2:  # batch norm cannot train on one sample
                continue
            xb, yb = xt[idx], yt[idx]
            with autocast_context(precision, device):
                loss = _loss(task, prepared(xb), xb, yb)
            if not torch.isfinite(loss):
                raise TinyprecError(f"QAT: loss became {float(loss)} at epoch {epoch + 1}; lower quant.lr (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        losses.append(total / max(count, 1))
        note = ""
        if val is not None and len(val[0]):
            with fake_quant_eval(prepared):
                scores.append(evaluate(prepared, val[0], val[1], task=task))
            if best_epoch is None or not better(task, scores[best_epoch], scores[-1]):  # ties: the later epoch
                best_epoch, best_state = epoch, copy.deepcopy(prepared.state_dict())
            note = f", val {scores[-1]:.4g}"
        if progress:
            progress(f"QAT epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}{note}")
        if max_steps is not None and steps >= max_steps:
            break
    if best_state is not None and best_epoch != len(losses) - 1:
        prepared.load_state_dict(best_state)
        if progress:
            progress(f"QAT: kept epoch {best_epoch + 1} (best validation score)")
    if best_epoch is None and losses:
        best_epoch = len(losses) - 1
    return QatLog(tuple(losses), steps, bn_at, obs_at, tuple(scores), best_epoch)


@torch.no_grad()
def _warm_up_observers(prepared: fx.GraphModule, x: torch.Tensor, *, batch_size: int, num_batches: int) -> None:
    from tinyprec.quant.bnfold import set_train_mode

    set_train_mode(prepared, bn_train=False, dropout_train=False)
    # A fixed-seed shuffle, as calibrate(): storage order may be by class or by clip.
    for i, idx in enumerate(batches(len(x), batch_size, shuffle=True, rng=np.random.default_rng(0))):
        if i >= num_batches:
            break
        prepared(x[idx])


@torch.no_grad()
def _init_learned_scales(prepared: fx.GraphModule, x: torch.Tensor) -> None:
    """One forward with every observer paused, so each LSQ fake quant sets its scale from its weights."""
    from tinyprec.quant.lsq import lsq_modules

    if all(bool(m.initialized) for m in lsq_modules(prepared)):
        return
    with fake_quant_eval(prepared):
        prepared(x)


@torch.no_grad()
def calibrate(prepared: fx.GraphModule, x: np.ndarray, *, batch_size: int, num_batches: int,
              progress: Progress | None = None) -> int:
    """Run ``num_batches`` batches of ``x`` through a prepare_pt2e program (float32). Returns samples seen.

    The batches come from a fixed-seed shuffle of ``x``, so inputs stored in class or clip order still calibrate
    on a mix (the first batches in storage order could hold one class or one clip: measured on the machine-sound
    autoencoder, int8 AUC 72.1 vs FP32 87.9 that way, 88.0 vs 88.2 shuffled)."""
    seen = 0
    for i, idx in enumerate(batches(len(x), batch_size, shuffle=True, rng=np.random.default_rng(0))):
        if i >= num_batches:
            break
        prepared(torch.from_numpy(np.ascontiguousarray(x[idx])))
        seen += len(idx)
    if progress:
        progress(f"PTQ calibration: {seen} samples")
    return seen


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, y: np.ndarray, *, task: str,
             batch_size: int = 256) -> float:
    """Top-1 accuracy in percent (classification) or mean squared reconstruction error (autoencoder)."""
    correct, err, n = 0, 0.0, 0
    for idx in batches(len(x), batch_size, shuffle=False):
        xb = torch.from_numpy(np.ascontiguousarray(x[idx]))
        out = model(xb).float()
        if task == "autoencoder":
            err += float(torch.sum((out - xb.reshape(out.shape)) ** 2)) / out[0].numel()
        else:
            correct += int((out.argmax(-1) == torch.from_numpy(y[idx])).sum())
        n += len(idx)
    if n == 0:
        return float("nan")
    return err / n if task == "autoencoder" else 100.0 * correct / n
