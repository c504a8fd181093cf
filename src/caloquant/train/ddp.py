"""Data-parallel training across processes and machines, launched by torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
:func:`init` joins the process group with the gloo backend (the one that runs on CPUs).
Without torchrun (WORLD_SIZE unset or 1) training runs in one process and nothing here
communicates. Gradients are averaged by DistributedDataParallel; BatchNorm statistics stay
per process (SyncBatchNorm needs GPUs), as in any CPU DDP run.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from caloquant.errors import CaloquantError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_world: int = 1
    owns_group: bool = False  # this Dist created the process group (and destroys it)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(timeout_min: float = 60.0) -> Dist:
    """Join the process group when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_gloo_available():
        raise CaloquantError(
            "this PyTorch build has no gloo backend: distributed CPU training is impossible"
        )
    owns = not dist.is_initialized()
    if owns:
        # the timeout covers the longest wait of one rank for another: rank 0's per-epoch validation
        dist.init_process_group("gloo", timeout=_dt.timedelta(minutes=timeout_min))
    return Dist(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        owns,
    )


def shutdown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
