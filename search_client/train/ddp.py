"""Process-group setup for torchrun (DDP): nccl on GPU, gloo on CPU; a no-op in a single process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; starts the process group when world size > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
        log.info("process group up: rank %d of %d on %s", rank, world, dev)
    return DistInfo(rank, world, local, dev)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj: object) -> list[object]:
    if not info.distributed:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average named scalars over ranks (for logging); identity in a single process."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
