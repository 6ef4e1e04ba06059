"""DWBC channel gates (PaS / RTSeg width search).

One trainable scalar per channel; the forward value is the binary mask ``w > 0.5`` and the gradient
passes straight through to ``w`` (STE). A gate multiplies the feature map channel-wise, placed after
the nonlinearity (or after a residual add), so a pruned channel is exactly zero and can later be
removed physically. One gate object may sit at several places of a network: channels tied by a
residual stream share one gate, so the stream keeps one consistent set of channels.
"""

from __future__ import annotations

import torch
from torch import nn

THRESHOLD = 0.5


class ChannelGate(nn.Module):
    """Binary channel mask with a straight-through gradient and a floor on the kept count.

    ``dim`` is the channel dimension: 1 for NCHW maps, -1 for token features (MHSA MLP).
    While ``enabled`` is False the gate passes its input through unchanged (used where a stream
    must stay full, e.g. a stage that currently runs an attention block).
    """

    def __init__(self, channels: int, init: float = 0.6, floor: int = 1, dim: int = 1):
        super().__init__()
        if channels < 1:
            raise ValueError(f"a gate needs at least one channel, got {channels}")
        self.weight = nn.Parameter(torch.full((channels,), float(init)))
        self.floor = max(1, min(int(floor), channels))
        self.dim = dim
        self.enabled = True

    @property
    def channels(self) -> int:
        return self.weight.numel()

    def kept(self) -> torch.Tensor:
        """(C,) bool mask of kept channels: above the threshold, or the top-``floor`` by value when
        fewer pass. Computed without reading the count back, so a GPU forward never syncs here."""
        w = self.weight.detach()
        above = w > THRESHOLD
        top = torch.zeros_like(above)
        top[torch.topk(w, self.floor).indices] = True
        return torch.where(above.sum() < self.floor, top, above)

    def ste_mask(self) -> torch.Tensor:
        """(C,) float mask: forward value 0/1, gradient 1 with respect to ``weight``."""
        hard = self.kept().to(self.weight.dtype)
        return hard + self.weight - self.weight.detach()

    def soft_count(self) -> torch.Tensor:
        """Differentiable number of kept channels (its value is the hard count)."""
        return self.ste_mask().sum()

    def kept_count(self) -> int:
        return int(self.kept().sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        shape = [1] * x.dim()
        shape[self.dim] = self.channels
        return x * self.ste_mask().to(x.dtype).reshape(shape)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, floor={self.floor}, dim={self.dim}"


def gates_of(model: nn.Module) -> list[ChannelGate]:
    """Every distinct gate of a model (a shared gate is listed once)."""
    seen: dict[int, ChannelGate] = {}
    for m in model.modules():
        if isinstance(m, ChannelGate):
            seen.setdefault(id(m), m)
    return list(seen.values())


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [g.weight for g in gates_of(model)]
