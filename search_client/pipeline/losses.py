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
    """Ld: the teacher's main prediction constrains the student's main output and every aux head.

    Equals the sum of :func:`pixel_kl` over the outputs, with the teacher's distribution and its
    negative entropy computed once per size instead of once per output (they are constants: the
    teacher is frozen), which halves the cost of the term at full resolution.
    """
    teacher = teacher_out.detach() / temperature
    by_size: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    loss = teacher.new_zeros(())
    for logits in (student_out, *student_aux):
        size = tuple(logits.shape[-2:])
        if size not in by_size:
            t = teacher if size == tuple(teacher.shape[-2:]) else F.interpolate(
                teacher, size=size, mode="bilinear", align_corners=False)
            log_t = F.log_softmax(t, dim=1)
            p_t = log_t.exp()
            by_size[size] = (p_t, (p_t * log_t).sum(dim=1).mean())
        p_t, neg_entropy = by_size[size]
        cross_entropy = F.cross_entropy(logits / temperature, p_t)  # soft targets: -mean sum p_t log s
        loss = loss + (neg_entropy + cross_entropy) * temperature**2
    return loss
