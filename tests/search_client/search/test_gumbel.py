"""Hard Gumbel-softmax mixed blocks: one path computed, straight-through gradient, annealing."""

from __future__ import annotations

import pytest
import torch

from search_client.models.mixed_block import PATHS, MixedBlock, sample_hard_gumbel, temperature_at


def block() -> MixedBlock:
    torch.manual_seed(0)
    return MixedBlock(channels=8, lir_mid=16, heads=2, patch=2, mhsa_mid=16)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_hard_choice_equals_running_the_single_chosen_block(seed: int) -> None:
    b = block().train()
    b.mode, b.tau = "gumbel", 1.0
    b.generator = torch.Generator().manual_seed(seed)
    ran = []
    b.lir.register_forward_hook(lambda *_: ran.append("lir"))
    b.mhsa.register_forward_hook(lambda *_: ran.append("mhsa"))
    x = torch.randn(2, 8, 8, 8)
    chosen = b.resample()
    y = b(x)
    ran_ref = list(ran)
    reference = {"skip": lambda: x, "lir": lambda: b.lir(x), "mhsa": lambda: b.mhsa(x)}[chosen]()
    assert ran_ref == ([] if chosen == "skip" else [chosen])
    assert torch.allclose(y, reference, rtol=1e-6, atol=1e-6)  # one-hot value is 1 - s + s


def test_gradient_reaches_the_logits_through_the_one_hot() -> None:
    b = block().train()
    b.mode = "gumbel"
    b.generator = torch.Generator().manual_seed(0)
    b(torch.randn(1, 8, 8, 8)).square().sum().backward()
    assert b.arch_logits.grad is not None and b.arch_logits.grad.abs().sum() > 0


def test_samples_follow_the_path_probabilities() -> None:
    logits = torch.tensor([0.0, 1.5, -1.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(3000):
        onehot, index = sample_hard_gumbel(logits, 1.0, gen)
        assert onehot[index].item() == 1.0 and onehot.sum().item() == pytest.approx(1.0)
        counts[index] += 1
    assert torch.allclose(counts / 3000, torch.softmax(logits, 0), atol=0.03)


def test_eval_mode_takes_the_argmax_path() -> None:
    b = block().eval()
    b.mode = "gumbel"
    b.arch_logits.data = torch.tensor([0.0, -1.0, 2.0])
    assert b.chosen() == "mhsa"
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(b(x), b.mhsa(x))


def test_full_mode_averages_both_paths() -> None:
    b = block().eval()
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(b(x), 0.5 * (b.lir(x) + b.mhsa(x)))


def test_temperature_anneals_from_start_to_end() -> None:
    temps = [temperature_at(s, 100) for s in range(0, 101, 10)]
    assert temps[0] == pytest.approx(10.0) and temps[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(temps, temps[1:], strict=False))
    assert temperature_at(50, 100) == pytest.approx(1.0)  # geometric midpoint
    assert temperature_at(50, 100, kind="linear") == pytest.approx(5.05)
    assert temperature_at(500, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="'exp' or 'linear'"):
        temperature_at(1, 10, kind="cosine")


def test_supernet_search_mode_samples_per_forward_and_keeps_the_contract(supernet) -> None:
    supernet.set_search(tau=1.0, generator=torch.Generator().manual_seed(0))
    supernet.train()
    seen = set()
    for _ in range(6):
        out = supernet(torch.randn(2, 3, 64, 64))  # batch 2: context BN needs > 1 value per channel
        assert out["out"].shape == (2, 5, 64, 64)
        seen.add(tuple(PATHS.index(b.resample()) for b in supernet.mixed_blocks()))
    assert len(seen) > 1
    out["out"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.arch_parameters())


def test_batched_resample_gives_each_block_its_own_one_hot_and_gradient() -> None:
    from search_client.models.mixed_block import resample_all

    blocks = [block().train() for _ in range(3)]
    for b, logits in zip(blocks, ([9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0]), strict=True):
        b.mode, b.tau = "gumbel", 0.5
        b.arch_logits.data = torch.tensor(logits)
    resample_all(blocks)
    assert [b._sample[1] for b in blocks] == [0, 1, 2]
    x = torch.randn(2, 8, 8, 8)
    sum(b(x).sum() for b in blocks).backward()
    assert all(b.arch_logits.grad is not None for b in blocks)
    assert not any(b.pending() for b in blocks)
