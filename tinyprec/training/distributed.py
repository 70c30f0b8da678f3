"""DDP set-up under torchrun: gloo on CPU, nccl on CUDA; only rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), here)


def barrier(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        dist.barrier()


def all_sum(info: DistInfo, values: list[float], device: Any) -> list[float]:
    """Sum ``values`` over ranks (identity for one process)."""
    if not info.active:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def teardown(info: DistInfo) -> None:
    if info.initialized_here:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
