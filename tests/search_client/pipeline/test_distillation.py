import math

import pytest
import torch

from search_client.config import ConfigError, build_config
from search_client.pipeline.distillation import distill_loss, pixel_kl
from search_client.pipeline.training import TeacherDistill
from search_client.train import StepInputs
from search_client.train.losses import loss_shares


def _logits(*probs: float) -> torch.Tensor:
    """One pixel of one image whose softmax is ``probs``: (1, C, 1, 1)."""
    return torch.tensor(probs).log().view(1, -1, 1, 1)


# q_s = (0.5, 0.25, 0.25), q_t = (0.8, 0.1, 0.1): an asymmetric pair, so the two directions differ.
KL_S_T = 0.5 * math.log(0.5 / 0.8) + 2 * 0.25 * math.log(0.25 / 0.1)  # 0.2231
KL_T_S = 0.8 * math.log(0.8 / 0.5) + 2 * 0.1 * math.log(0.1 / 0.25)  # 0.1927


def test_pixel_kl_puts_the_students_distribution_first_as_eq_10():
    s, t = _logits(0.5, 0.25, 0.25), _logits(0.8, 0.1, 0.1)
    assert pixel_kl(s, t).item() == pytest.approx(KL_S_T, rel=1e-5)
    assert pixel_kl(s, t, direction="teacher-student").item() == pytest.approx(KL_T_S, rel=1e-5)
    assert abs(KL_S_T - KL_T_S) > 0.02
    assert pixel_kl(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_pixel_kl_sums_over_the_pixels_of_an_image_and_averages_over_the_batch():
    a, b = _logits(0.5, 0.25, 0.25), _logits(0.2, 0.2, 0.6)
    t = _logits(0.8, 0.1, 0.1)
    kl_b = sum(p * math.log(p / q) for p, q in zip((0.2, 0.2, 0.6), (0.8, 0.1, 0.1), strict=True))
    image = torch.cat([a, b], dim=3)  # (1, 3, 1, 2): two pixels
    teacher = torch.cat([t, t], dim=3)
    assert pixel_kl(image, teacher).item() == pytest.approx(KL_S_T + kl_b, rel=1e-5)
    assert pixel_kl(image, teacher, reduction="mean").item() == pytest.approx((KL_S_T + kl_b) / 2, rel=1e-5)
    batch = torch.cat([image, torch.cat([a, a], dim=3)])  # (2, 3, 1, 2)
    want = ((KL_S_T + kl_b) + 2 * KL_S_T) / 2
    assert pixel_kl(batch, torch.cat([teacher, teacher])).item() == pytest.approx(want, rel=1e-5)


def test_unknown_direction_or_reduction_is_refused():
    s = _logits(0.5, 0.5)
    with pytest.raises(ValueError, match="direction"):
        pixel_kl(s, s, direction="both")
    with pytest.raises(ValueError, match="reduction"):
        distill_loss(s, [], s, reduction="max")
    with pytest.raises(ConfigError, match="distill_direction"):
        build_config("synthetic-cpu", {"search": {"distill_direction": "symmetric"}})


def test_distill_reaches_student_only_and_resizes_teacher():
    student = torch.randn(2, 5, 8, 8, requires_grad=True)
    aux = torch.randn(2, 5, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 5, 8, 8, requires_grad=True)
    loss = distill_loss(student, [aux], teacher)
    loss.backward()
    assert student.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher is frozen: no gradient through its logits


@pytest.mark.parametrize("direction", ["student-teacher", "teacher-student"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_distill_equals_the_sum_of_pixel_kl_per_output_and_gives_the_same_gradient(direction, reduction):
    torch.manual_seed(0)
    student = torch.randn(2, 5, 8, 8, requires_grad=True)
    aux = [torch.randn(2, 5, 8, 8, requires_grad=True), torch.randn(2, 5, 4, 4, requires_grad=True)]
    teacher = torch.randn(2, 5, 8, 8)
    kw = {"temperature": 2.0, "direction": direction, "reduction": reduction}
    fast = distill_loss(student, aux, teacher, **kw)
    slow = sum(pixel_kl(x, teacher, **kw) for x in (student, *aux))
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    g_fast = torch.autograd.grad(fast, [student, *aux])
    g_slow = torch.autograd.grad(slow, [student, *aux])
    for a, b in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


class _Constant(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


@pytest.mark.parametrize(("direction", "expected"), [("student-teacher", KL_S_T), ("teacher-student", KL_T_S)])
def test_the_distill_term_follows_the_run_configs_direction(direction, expected):
    search = build_config("synthetic-cpu", {"search": {"distill_direction": direction}}).search
    term = TeacherDistill.from_config(_Constant(_logits(0.8, 0.1, 0.1)), search)
    s = _logits(0.5, 0.25, 0.25)
    value = term(StepInputs(torch.zeros(1, 3, 1, 1), torch.zeros(1, 1, 1), {"out": s, "aux": [s]}, 0))
    assert value.item() == pytest.approx(2 * expected, rel=1e-5)  # main output + one aux head


def test_loss_shares_are_each_weighted_terms_part_of_the_total_and_sum_to_one():
    terms = {"task": 2.0, "aux": 1.0, "distill": 300.0, "latency": 0.5, "latency_ms": 12.0}
    weights = {"task": 1.0, "aux": 1.0, "distill": 0.001, "latency": 0.01, "latency_ms": 0.0}
    shares = loss_shares(terms, weights)
    total = 2.0 + 1.0 + 0.3 + 0.005
    assert shares == pytest.approx({"share_task": 2.0 / total, "share_aux": 1.0 / total,
                                    "share_distill": 0.3 / total, "share_latency": 0.005 / total})
    assert sum(shares.values()) == pytest.approx(1.0)
    assert loss_shares({"task": 0.0}, {}) == {"share_task": 0.0}
