"""Stage 1: the mixed-precision training loop (autocast, GradScaler for fp16, FP32 master weights, DDP)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyprec._io import atomic_path, atomic_write_text
from tinyprec.data import Dataset, check_model_fits
from tinyprec.errors import ArtifactError, TinyprecError
from tinyprec.recipe import TrainConfig
from tinyprec.training import distributed as dd
from tinyprec.training.augment import augment_batch, cepstral_warps, epoch_generator
from tinyprec.training.checkpoint import load_checkpoint, save_checkpoint
from tinyprec.training.precision import autocast_context, make_grad_scaler, select_precision
from tinyprec.training.safety import SafetyMeter

STAGE_DIR = "train"


@dataclass(frozen=True)
class ProgressEvent:
    """What the loop reports to a progress callback (the CLI draws it; the library never prints)."""

    kind: str  # "start" | "step" | "epoch" | "end"
    epoch: int  # 1-based epoch the event belongs to (0 before the first)
    epochs: int
    step: int = 0
    steps: int = 0
    loss: float | None = None
    record: Mapping[str, Any] | None = None  # the epoch record for "epoch"; run facts for "start"/"end"


@dataclass(frozen=True)
class StepOutcome:
    """One optimizer step: the loss, whether the scaler skipped it, and the loss scale after it."""

    loss: float
    skipped: bool
    scale: float
    correct: int


@dataclass(frozen=True)
class TrainResult:
    """Stage 1's result; the files live in ``out_dir/train/``."""

    model: Any
    checkpoint_path: Path
    weights_path: Path
    metrics_path: Path
    precision: str
    device: str
    test_accuracy: float | None  # None for an autoencoder
    val_accuracy: float | None
    test_loss: float
    val_loss: float
    epochs_run: int  # epochs trained by this call (0 when a finished checkpoint was resumed)
    epochs_total: int
    skipped_steps: int
    world_size: int
    resumed_from_epoch: int | None
    seconds: float


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and Python's random; call before building a model for reproducible init."""
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> Any:
    """"auto" -> CUDA when available (this rank's GPU under torchrun), else CPU."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise TinyprecError("train.device: 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _loss_fn(task: str, label_smoothing: float) -> Callable[[Any, Any, Any], Any]:
    import torch.nn.functional as F

    if task == "autoencoder":
        return lambda out, x, y: F.mse_loss(out.float(), x)
    return lambda out, x, y: F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)


def train_step(model: Any, xb: Any, yb: Any, loss_fn: Any, optimizer: Any, scaler: Any, precision: str,
               device: Any, *, grad_clip: float | None = None, meter: SafetyMeter | None = None,
               global_step: int = 0, observe: bool = False, classification: bool = True) -> StepOutcome:
    """One step: forward under autocast, scaled backward, (maybe skipped) FP32 optimizer step, scale update."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    with autocast_context(precision, device):
        out = model(xb)
        loss = loss_fn(out, xb, yb)
    if precision != "fp16" and not bool(torch.isfinite(loss)):
        raise TinyprecError(
            f"training diverged at step {global_step}: the loss is {float(loss)}; lower train.lr or set grad_clip"
        )
    scale_before = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
    scaler.scale(loss).backward()
    if meter is not None and observe:
        meter.observe_gradients(model.parameters(), scale_before)
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scale_after = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
    skipped = meter.observe_step(global_step, scale_before, scale_after) if meter else scale_after < scale_before
    correct = int((out.detach().argmax(1) == yb).sum()) if classification else 0
    return StepOutcome(float(loss.detach()), skipped, scale_after, correct)


def evaluate(model: Any, x: Any, y: Any, task: str, batch_size: int = 512) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of ``model`` in FP32 eval mode on tensors x, y (nan, None when empty)."""
    import torch

    if len(x) == 0:
        return float("nan"), None

    loss_fn = _loss_fn(task, 0.0)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            total_loss += float(loss_fn(out, xb, yb)) * len(xb)
            if task == "classification":
                correct += int((out.argmax(1) == yb).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return total_loss / n, (correct / n if task == "classification" else None)


def _make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _make_scheduler(optimizer: Any, cfg: TrainConfig, total_steps: int) -> Any:
    import torch

    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    total = max(total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def _run_facts(cfg: TrainConfig, seed: int, world: int) -> dict[str, Any]:
    return {"config": dataclasses.asdict(cfg), "seed": seed, "world_size": world}


def _check_resume(state: Mapping[str, Any], facts: Mapping[str, Any], path: Path) -> None:
    old = {"seed": state.get("seed"), "world_size": state.get("world_size"), **dict(state.get("config", {}))}
    new = {"seed": facts["seed"], "world_size": facts["world_size"], **facts["config"]}
    for key, value in new.items():
        if key != "epochs" and old.get(key) != value:  # more (or fewer) epochs may follow an interruption
            raise ArtifactError(
                f"{path}: made with {key} = {old.get(key)!r}, now {value!r}; "
                "restore the setting or train without --resume to start over"
            )


def train_model(model: Any, dataset: Dataset, cfg: TrainConfig, out_dir: Path, *, seed: int = 0,
                resume: bool = False, progress: Callable[[ProgressEvent], None] | None = None) -> TrainResult:
    """Train ``model`` on ``dataset`` with mixed precision; write checkpoint, weights and metrics to out_dir/train/.

    Works on any nn.Module whose input fits ``dataset.input_shape``. Parameters and optimizer state stay
    FP32; autocast runs eligible ops in the precision ``cfg.precision`` resolves to; fp16 uses dynamic loss
    scaling. Under torchrun (WORLD_SIZE > 1) it trains with DDP and only rank 0 writes. ``resume`` continues
    from out_dir/train/checkpoint.pt when it exists. Seed the model's initialization yourself
    (:func:`seed_everything`) before building it; ``seed`` fixes the data order and dropout.
    """
    import torch

    started = time.perf_counter()
    emit = progress or (lambda event: None)
    stage = Path(out_dir) / STAGE_DIR
    ckpt_path, weights_path, metrics_path = stage / "checkpoint.pt", stage / "model_fp32.pt", stage / "metrics.json"
    device_type = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    info = dd.setup_distributed(device_type)
    device = resolve_device(cfg.device, info.local_rank)
    precision = select_precision(cfg.precision, device)
    if cfg.deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model.to(device)
    check_model_fits(dataset, model)
    for p in model.parameters():
        if p.dtype != torch.float32:
            raise TinyprecError(f"model parameter dtype {p.dtype}: train keeps FP32 master weights; pass a float32 model")

    def tensors(split: str) -> tuple[Any, Any]:
        return (torch.from_numpy(dataset.inputs(split)).to(device),
                torch.from_numpy(getattr(dataset, split).y).to(device))

    cfg.augment.check()  # recipes check on load; a config built in code is checked here
    cfg.augment.check_shape(tuple(dataset.input_shape))
    warps = cepstral_warps(cfg.augment, dataset.preprocess, device)
    (x_tr, y_tr), (x_val, y_val) = tensors("train"), tensors("val")
    from torch.utils.data.distributed import DistributedSampler

    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(x_tr)), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed  # type: ignore[arg-type]
    )
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    optimizer = _make_optimizer(model, cfg)
    scheduler = _make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    scaler = make_grad_scaler(precision, device, cfg.init_scale)
    facts = _run_facts(cfg, seed, info.world_size)
    net = model
    if info.active:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(seed)
    history: list[dict[str, Any]] = []
    start_epoch, resumed_from = 0, None
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        _check_resume(state, facts, ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        history = list(state["history"])
        start_epoch = resumed_from = int(state["epoch"])
    loss_fn = _loss_fn(dataset.task, cfg.label_smoothing)
    emit(ProgressEvent("start", start_epoch, cfg.epochs, steps=steps_per_epoch,
                       record={"precision": precision, "device": str(device), "world_size": info.world_size,
                               "resumed_from_epoch": resumed_from, "train_samples": len(x_tr)}))
    sample_every = max(1, steps_per_epoch // 8)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long, device=device)
        meter = SafetyMeter(precision, float(scaler.get_scale()) if scaler.is_enabled() else 1.0)
        gen = epoch_generator(seed, epoch, device) if cfg.augment.active else None
        loss_sum = correct = seen = skipped = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if len(idx) < 2 and step > 0:
                break  # batch norm cannot train on a single sample
            gstep = epoch * steps_per_epoch + step
            xb = x_tr[idx] if gen is None else augment_batch(x_tr[idx], cfg.augment, gen, warps)
            out = train_step(net, xb, y_tr[idx], loss_fn, optimizer, scaler, precision, device,
                             grad_clip=cfg.grad_clip, meter=meter, global_step=gstep, observe=step % sample_every == 0,
                             classification=dataset.task == "classification")
            scheduler.step()
            skipped += out.skipped
            if math.isfinite(out.loss):
                loss_sum += out.loss * len(idx)
            correct += out.correct
            seen += len(idx)
            emit(ProgressEvent("step", epoch + 1, cfg.epochs, step + 1, steps_per_epoch, out.loss))
        loss_sum, correct, seen = dd.all_sum(info, [loss_sum, correct, seen], device)
        train_seconds = time.perf_counter() - t0
        val_loss, val_acc = evaluate(model, x_val, y_val, dataset.task)
        record: dict[str, Any] = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1) if dataset.task == "classification" else None,
            "val_loss": val_loss, "val_accuracy": val_acc, "lr": float(optimizer.param_groups[0]["lr"]),
            "samples_per_s": seen / train_seconds if train_seconds > 0 else None, "seconds": train_seconds,
            "skipped_steps": int(skipped),
            "safety": meter.record(float(scaler.get_scale()) if scaler.is_enabled() else 1.0),
        }
        history.append(record)
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history, "precision": precision, **facts,
            })
            _write_metrics(metrics_path, dataset, facts, precision, device, history, None, done=False)
        dd.barrier(info)
        emit(ProgressEvent("epoch", epoch + 1, cfg.epochs, steps_per_epoch, steps_per_epoch, record["train_loss"], record))
    x_te, y_te = tensors("test")
    test_loss, test_acc = evaluate(model, x_te, y_te, dataset.task)
    val_loss, val_acc = evaluate(model, x_val, y_val, dataset.task)
    final = {"test_loss": test_loss, "test_accuracy": test_acc, "val_loss": val_loss, "val_accuracy": val_acc}
    if info.is_main:
        with atomic_path(weights_path) as tmp:
            torch.save(model.state_dict(), tmp)
        _write_metrics(metrics_path, dataset, facts, precision, device, history, final, done=True)
        _record_manifest(Path(out_dir), ckpt_path, weights_path, metrics_path)
    dd.teardown(info)
    model.eval()
    total_skipped = sum(int(r["skipped_steps"]) for r in history)
    emit(ProgressEvent("end", cfg.epochs, cfg.epochs, record={**final, "skipped_steps": total_skipped}))
    return TrainResult(
        model=model, checkpoint_path=ckpt_path, weights_path=weights_path, metrics_path=metrics_path,
        precision=precision, device=str(device), test_accuracy=test_acc, val_accuracy=val_acc, test_loss=test_loss,
        val_loss=val_loss, epochs_run=cfg.epochs - start_epoch, epochs_total=cfg.epochs, skipped_steps=total_skipped,
        world_size=info.world_size, resumed_from_epoch=resumed_from, seconds=time.perf_counter() - started,
    )


def _write_metrics(path: Path, dataset: Dataset, facts: Mapping[str, Any], precision: str, device: Any,
                   history: list[dict[str, Any]], final: Mapping[str, Any] | None, *, done: bool) -> None:
    doc = {
        "stage": "train", "complete": done, "dataset": dataset.name, "task": dataset.task,
        "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes,
        "preprocess": dataset.preprocess.to_dict(), "precision": precision, "device": str(device),
        **facts, "epochs": history, "skipped_steps": sum(int(r["skipped_steps"]) for r in history),
        **(dict(final) if final else {}),
    }
    atomic_write_text(path, json.dumps(_finite(doc), indent=2) + "\n")


def _finite(value: Any) -> Any:
    """Strict JSON: non-finite floats (an empty split's loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _record_manifest(out_dir: Path, ckpt: Path, weights: Path, metrics: Path) -> None:
    from tinyprec import manifest

    manifest.record(out_dir, {"train_checkpoint": ckpt, "weights_fp32": weights, "train_metrics": metrics})
