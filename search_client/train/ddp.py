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


DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(choice: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when a CUDA device is available, else ``cpu``; ``cuda`` without
    one is an error that says so."""
    if choice in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {choice!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: no CUDA device is available (use --device cpu or auto)")
    return choice


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


def broadcast_object(info: DistInfo, obj: object) -> object:
    """Rank 0's ``obj`` on every rank (picklable objects); identity in a single process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.device.type == "cuda" else None)
    return box[0]


def broadcast_parameters(info: DistInfo, params: list[torch.nn.Parameter]) -> None:
    """Copy rank 0's values of ``params`` to every rank."""
    if info.distributed:
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(info: DistInfo, params: list[torch.nn.Parameter]) -> None:
    """All-reduce the mean of ``params``' gradients over ranks, in one flat tensor (a missing
    gradient counts as zero, so every rank steps every parameter alike)."""
    if not info.distributed or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
        offset += g.numel()


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
