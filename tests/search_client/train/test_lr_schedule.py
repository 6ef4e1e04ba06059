"""Linear warm-up then poly 0.9."""

from __future__ import annotations

import pytest
import torch

from search_client.train.schedule import WarmupPoly, warmup_poly


def test_factor_values() -> None:
    f = WarmupPoly(total=100, warmup=10, start=0.1, power=0.9)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5**0.9)
    assert f(100) == 0.0 and f(150) == 0.0


def test_without_warmup_is_the_papers_poly() -> None:
    f = WarmupPoly(total=40, warmup=0, power=0.9)
    for it in (0, 7, 39):
        assert f(it) == pytest.approx((1 - it / 40) ** 0.9)


def test_scheduler_drives_the_optimizer_and_round_trips() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = warmup_poly(opt, total=20, warmup=4, start=0.25, power=0.9)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:5] == pytest.approx([0.025, 0.04375, 0.0625, 0.08125, 0.1])
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = warmup_poly(opt2, total=20, warmup=4, start=0.25, power=0.9)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
