import pytest
import torch
import torch.nn.functional as F

from search_client.pipeline.losses import distill_loss, pixel_kl


def test_pixel_kl_matches_hand_computed_distribution():
    # One pixel, two classes: KL(t || s) by hand.
    s = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    t = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    ps, pt = F.softmax(s.flatten(), 0), F.softmax(t.flatten(), 0)
    expected = float((pt * (pt.log() - ps.log())).sum())
    assert pixel_kl(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert pixel_kl(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_distill_reaches_student_only_and_resizes_teacher():
    student = torch.randn(2, 5, 8, 8, requires_grad=True)
    aux = torch.randn(2, 5, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 5, 8, 8, requires_grad=True)
    loss = distill_loss(student, [aux], teacher)
    loss.backward()
    assert student.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher is frozen: no gradient through its logits


def test_distill_equals_the_sum_of_pixel_kl_per_output_and_gives_the_same_gradient():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 8, 8, requires_grad=True)
    aux = [torch.randn(2, 5, 8, 8, requires_grad=True), torch.randn(2, 5, 4, 4, requires_grad=True)]
    teacher = torch.randn(2, 5, 8, 8)
    fast = distill_loss(student, aux, teacher, temperature=2.0)
    slow = sum(pixel_kl(x, teacher, temperature=2.0) for x in (student, *aux))
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    g_fast = torch.autograd.grad(fast, [student, *aux])
    g_slow = torch.autograd.grad(slow, [student, *aux])
    for a, b in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-7)
