"""Segmentation losses: OHEM cross-entropy (BiSeNetV2 recipe) and the task + aux terms of a step."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search_client.config import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over the hard pixels only.

    Keeps the pixels whose loss exceeds ``-log(thresh)`` (probability of the true class below
    ``thresh``), but never fewer than ``min_kept`` of the valid (non-255) pixels: when too few are hard,
    the ``ceil(min_kept * valid)`` largest losses are kept instead. Returns their mean.
    """

    def __init__(self, thresh: float = 0.7, min_kept: float = 1 / 16, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.loss_thresh = -math.log(thresh)
        self.min_kept = min_kept
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        pixel_loss = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index, reduction="none")
        valid = pixel_loss[labels != self.ignore_index]  # (N_valid,)
        if valid.numel() == 0:
            return logits.sum() * 0.0  # keeps the graph (DDP needs every parameter to get a gradient)
        n_min = max(1, math.ceil(self.min_kept * valid.numel()))
        hard = valid[valid > self.loss_thresh]
        if hard.numel() < n_min:
            hard = valid.topk(n_min).values
        return hard.mean()


def as_outputs(outputs: torch.Tensor | dict) -> dict:
    """Train-mode model outputs as ``{"out": (B,K,H,W), "aux": [(B,K,H,W), ...]}``."""
    if isinstance(outputs, torch.Tensor):
        return {"out": outputs, "aux": []}
    return {"out": outputs["out"], "aux": list(outputs.get("aux", []))}


def segmentation_terms(
    criterion: nn.Module, out: torch.Tensor, aux: Sequence[torch.Tensor], labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``task`` = loss of the main output, ``aux`` = sum over the aux heads (unweighted; γ applies later)."""
    task = criterion(out, labels)
    aux_loss = sum((criterion(a, labels) for a in aux), start=torch.zeros((), device=out.device))
    return {"task": task, "aux": aux_loss}


def loss_shares(terms: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """Each weighted term's share of the step's total loss: ``share_<name>`` = |w·v| / Σ |w·v|.

    Terms weighted 0 (logged curves such as ``latency_ms``) have no share; a missing weight is 1 as in
    the loss. The shares sum to 1 (all 0 when every weighted term is 0). In the search they show L,
    β·Lreg, γ·Laux and λ·Ld side by side, e.g. whether the distillation booster weighs anything.
    """
    weighted = {k: abs(weights.get(k, 1.0) * v) for k, v in terms.items() if weights.get(k, 1.0) != 0}
    total = sum(weighted.values())
    return {f"share_{k}": (v / total if total > 0 else 0.0) for k, v in weighted.items()}
