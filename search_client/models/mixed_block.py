"""Mixed blocks chosen by hard Gumbel-softmax (GDAS style) and the temperature schedule.

A mixed block holds three paths: skip, a LIR block and an MHSA block, plus three architecture logits.
What it computes depends on its mode:

- ``full``: the supernet's pretraining / teacher mode; LIR and MHSA both run and are averaged.
- a fixed path (``skip`` | ``lir`` | ``mhsa``): only that path runs (subnet training, evaluation).
- ``gumbel``: a path is sampled per forward from the logits with a straight-through one-hot; only
  the sampled path runs and its output is scaled by the one-hot entry (value 1, gradient to the
  logits). In eval mode a block in ``gumbel`` mode takes the argmax path.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared.blocks import LIRBlock, MHSABlock

PATHS: tuple[str, ...] = ("skip", "lir", "mhsa")
Mode = Literal["full", "gumbel", "skip", "lir", "mhsa"]


def _hard_gumbel_rows(
    logits: torch.Tensor, tau: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, list[int]]:
    """(n, 3) logits -> straight-through one-hots (value one-hot, gradient of the tempered softmax)
    and the chosen indices (one device-to-host read for all rows)."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).to(logits.device)
    g = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))  # Gumbel(0, 1)
    soft = torch.softmax((logits + g) / tau, dim=-1)
    indices = soft.argmax(dim=-1).tolist()
    hard = F.one_hot(torch.tensor(indices, device=logits.device), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft, indices


def sample_hard_gumbel(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, int]:
    """Straight-through one-hot sample of one (3,) logit vector and its index."""
    onehot, indices = _hard_gumbel_rows(logits[None], torch.tensor(tau, dtype=logits.dtype), generator)
    return onehot[0], indices[0]


def resample_all(blocks: list[MixedBlock]) -> None:
    """Draw the paths of many blocks in one batched sample: a single device-to-host read of the
    chosen indices per forward instead of one per block."""
    if not blocks:
        return
    logits = torch.stack([b.arch_logits for b in blocks])  # (n, 3)
    tau = torch.tensor([b.tau for b in blocks], dtype=logits.dtype, device=logits.device)[:, None]
    onehot, indices = _hard_gumbel_rows(logits, tau, blocks[0].generator)
    for i, (b, index) in enumerate(zip(blocks, indices, strict=True)):
        b.set_sample(onehot[i], index)


def temperature_at(step: int, total: int, start: float = 10.0, end: float = 0.1, kind: str = "exp") -> float:
    """Annealed temperature: ``exp`` interpolates geometrically start -> end (GDAS 10 -> 0.1),
    ``linear`` linearly; clamped to ``end`` after ``total`` steps."""
    frac = min(max(step / max(total, 1), 0.0), 1.0)
    if kind == "exp":
        return start * math.exp(frac * math.log(end / start))
    if kind == "linear":
        return start + frac * (end - start)
    raise ValueError(f"unknown temperature schedule {kind!r}; use 'exp' or 'linear'")


class MixedBlock(nn.Module):
    """skip | LIR | MHSA with architecture logits; see the module docstring for the modes."""

    def __init__(self, channels: int, lir_mid: int, heads: int, patch: int, mhsa_mid: int):
        super().__init__()
        self.lir = LIRBlock(channels, lir_mid, channels)
        self.mhsa = MHSABlock(channels, heads, patch, mhsa_mid)
        self.arch_logits = nn.Parameter(torch.zeros(len(PATHS)))
        self.mode: Mode = "full"
        self.tau = 1.0
        self.generator: torch.Generator | None = None
        self._sample: tuple[torch.Tensor, int] | None = None

    def path_probs(self) -> torch.Tensor:
        """(3,) softmax of the logits: skip, lir, mhsa."""
        return torch.softmax(self.arch_logits, dim=-1)

    def chosen(self) -> str:
        """The path the block runs next in eval mode (argmax for ``gumbel``)."""
        if self.mode == "gumbel":
            return PATHS[int(self.arch_logits.detach().argmax())]
        return self.mode

    def resample(self) -> str:
        """Draw the path for the next training forward (``gumbel`` mode); returns its name."""
        self._sample = sample_hard_gumbel(self.arch_logits, self.tau, self.generator)
        return PATHS[self._sample[1]]

    def pending(self) -> bool:
        """Whether a drawn path waits for the next forward."""
        return self._sample is not None

    def set_sample(self, onehot: torch.Tensor, index: int) -> None:
        self._sample = (onehot, index)

    def runs_mhsa(self) -> bool:
        """Whether the next forward runs the attention path (decides whether a stream gate applies)."""
        if self.mode == "full":
            return True
        if self.mode == "gumbel" and self.training:
            return self._sample is not None and self._sample[1] == 2
        return self.chosen() == "mhsa"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "full":
            return 0.5 * (self.lir(x) + self.mhsa(x))
        if self.mode == "gumbel" and self.training:
            if self._sample is None:
                self.resample()
            onehot, index = self._sample
            self._sample = None  # one sample per forward
            return onehot[index] * self._run(PATHS[index], x)
        return self._run(self.chosen(), x)

    def _run(self, path: str, x: torch.Tensor) -> torch.Tensor:
        if path == "skip":
            return x
        return self.lir(x) if path == "lir" else self.mhsa(x)
