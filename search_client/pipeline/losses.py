"""The two loss terms the search adds to plain training: self-distillation and the latency penalty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

RegMode = Literal["one-sided", "two-sided"]


def pixel_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over pixels of KL(teacher || student) of the per-pixel class distributions.

    ``(B, C, H, W)`` logits each; the teacher is resized to the student's size when they differ
    (aux heads may predict at their own stride).
    """
    if teacher_logits.shape[-2:] != student_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear", align_corners=False)
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (B, H, W)
    return kl.mean() * temperature**2


def distill_loss(
    student_out: torch.Tensor, student_aux: Sequence[torch.Tensor], teacher_out: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Ld: the teacher's main prediction constrains the student's main output and every aux head."""
    loss = pixel_kl(student_out, teacher_out, temperature)
    for aux in student_aux:
        loss = loss + pixel_kl(aux, teacher_out, temperature)
    return loss


def latency_penalty(expected_ms: torch.Tensor, target_ms: float, mode: RegMode = "one-sided") -> torch.Tensor:
    """Lreg relative to the target T: ``relu(E/T - 1)`` (one-sided) or ``|E/T - 1|`` (two-sided).

    Relative, so β means the same for a 5 ms phone target and a 500 ms one.
    """
    if target_ms <= 0:
        raise ValueError(f"target latency must be positive, got {target_ms}")
    ratio = expected_ms / target_ms - 1.0
    if mode == "one-sided":
        return F.relu(ratio)
    if mode == "two-sided":
        return ratio.abs()
    raise ValueError(f"unknown regularizer mode {mode!r}; use 'one-sided' or 'two-sided'")
