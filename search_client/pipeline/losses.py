"""Self-distillation (pixel-wise KL to the frozen supernet); the latency term is
``search_client.search.latency.latency_loss``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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
