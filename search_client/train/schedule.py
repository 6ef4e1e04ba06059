"""Learning-rate schedule: linear warm-up, then poly decay ``(1 - progress) ** power`` to zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupPoly:
    """lr factor of iteration ``it`` (0-based); a picklable callable so LambdaLR can checkpoint it."""

    total: int
    warmup: int = 0
    start: float = 0.1
    power: float = 0.9

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return self.start + (1.0 - self.start) * it / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (it - self.warmup) / span)
        return (1.0 - progress) ** self.power


def warmup_poly(optimizer: torch.optim.Optimizer, total: int, warmup: int, start: float, power: float) -> LambdaLR:
    return LambdaLR(optimizer, WarmupPoly(total, min(warmup, total - 1) if total > 1 else 0, start, power))
