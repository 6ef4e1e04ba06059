"""Self-distillation Ld (paper Eq. 10-12): pixel-wise KL between the student's and the frozen
supernet's class distributions; the latency term is ``search_client.search.latency.latency_loss``.

Direction: ``"student-teacher"`` (the default, as the paper writes Eq. 10) is KL(q_s ‖ q_t) =
Σ_c q_s(c) (log q_s(c) − log q_t(c)), the student's distribution first; ``"teacher-student"`` is the
usual knowledge-distillation direction KL(q_t ‖ q_s).

Reduction: ``"sum"`` (the default, Eq. 10's Σ over the pixels i ∈ R) sums the per-pixel KL over the
pixels of each image and averages over the images of the batch; ``"mean"`` averages over pixels and
images (the sum divided by H·W). With the paper's λ = 0.001 the sum at 512×1024 weighs about 524
times the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

KLDirection = Literal["student-teacher", "teacher-student"]
KLReduction = Literal["sum", "mean"]
DIRECTIONS: tuple[str, ...] = ("student-teacher", "teacher-student")
REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def _check(direction: str, reduction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; use one of {', '.join(DIRECTIONS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown KL reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")


def _kl_map(log_s: torch.Tensor, log_t: torch.Tensor, direction: str) -> torch.Tensor:
    """(B, C, H, W) log-probabilities -> (B, H, W) per-pixel KL in ``direction``."""
    if direction == "student-teacher":
        return (log_s.exp() * (log_s - log_t)).sum(dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1)


def _reduce(kl: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, H, W) -> scalar: per-image sum (or mean) over pixels, averaged over the batch."""
    per_image = kl.flatten(1).sum(dim=1) if reduction == "sum" else kl.flatten(1).mean(dim=1)
    return per_image.mean()


def _teacher_at(teacher_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(teacher_logits.shape[-2:]) == size:
        return teacher_logits
    return F.interpolate(teacher_logits, size=size, mode="bilinear", align_corners=False)


def pixel_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    direction: KLDirection = "student-teacher",
    reduction: KLReduction = "sum",
) -> torch.Tensor:
    """KL of the per-pixel class distributions of one output (see the module docstring for the
    direction and the reduction), times ``temperature²``.

    ``(B, C, H, W)`` logits each; the teacher is detached and resized to the student's size when they
    differ.
    """
    _check(direction, reduction)
    teacher = _teacher_at(teacher_logits.detach(), tuple(student_logits.shape[-2:]))
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    return _reduce(_kl_map(log_s, log_t, direction), reduction) * temperature**2


def distill_loss(
    student_out: torch.Tensor,
    student_aux: Sequence[torch.Tensor],
    teacher_out: torch.Tensor,
    temperature: float = 1.0,
    direction: KLDirection = "student-teacher",
    reduction: KLReduction = "sum",
) -> torch.Tensor:
    """Ld: the teacher's main prediction constrains the student's main output and every aux head.

    Equals the sum of :func:`pixel_kl` over the outputs; the teacher's log-distribution is computed
    once per output size (the teacher is frozen, so it is a constant of the step).
    """
    _check(direction, reduction)
    teacher = teacher_out.detach().float() / temperature
    log_t_by_size: dict[tuple[int, int], torch.Tensor] = {}
    loss = teacher.new_zeros(())
    for logits in (student_out, *student_aux):
        size = tuple(logits.shape[-2:])
        if size not in log_t_by_size:
            log_t_by_size[size] = F.log_softmax(_teacher_at(teacher, size), dim=1)
        log_s = F.log_softmax(logits.float() / temperature, dim=1)
        loss = loss + _reduce(_kl_map(log_s, log_t_by_size[size], direction), reduction) * temperature**2
    return loss
