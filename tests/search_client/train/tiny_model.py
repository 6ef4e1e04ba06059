"""A small network with the build_model contract (train: {"out", "aux"}; eval: logits) for fast loop tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySeg(nn.Module):
    def __init__(self, num_classes: int = 19, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)
        self.aux = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        size = x.shape[-2:]
        s = self.stem(x)
        out = F.interpolate(self.head(self.body(s)), size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        aux = F.interpolate(self.aux(s), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": [aux]}
