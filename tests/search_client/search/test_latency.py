"""Whole-network block lists and the differentiable latency regularizer."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_client.models import build_model
from search_client.search.latency import (
    expected_latency,
    latency_loss,
    network_blocks,
    predict_blocks,
    soft_features,
)
from shared.costs import block_macs
from shared.encoding import FEATURE_NAMES, encode_blocks
from shared.predictor import LatencyMLP

PATHS = ["lir", "skip", "lir", "mhsa", "skip", "lir", "mhsa"]


def predictor() -> LatencyMLP:
    torch.manual_seed(0)
    return LatencyMLP(hidden=32)


def test_block_list_covers_every_mac_of_the_network(supernet) -> None:
    supernet.set_active({"paths": PATHS})
    supernet.eval()
    for p in supernet.gate_parameters():
        p.data.fill_(1.0)  # every channel kept: the block list must match the supernet's own forward
    blocks = network_blocks(supernet, 64, 128)
    kinds = [b.kind for b in blocks]
    assert kinds[:8] == ["conv"] * 8 and kinds[8] == "stem" and kinds[-3:] == ["context", "bga", "head"]
    assert kinds.count("down") == 3 and kinds.count("lir") == 3 and kinds.count("mhsa") == 2
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        supernet(torch.randn(1, 3, 64, 128))
    assert sum(block_macs(b) for b in blocks) == counter.get_total_flops() // 2


def test_soft_features_equal_the_plain_encoding_for_fixed_paths(supernet) -> None:
    supernet.set_active({"paths": PATHS})
    feats, weights = soft_features(supernet, 64, 128)
    assert torch.allclose(feats, encode_blocks(network_blocks(supernet, 64, 128)), atol=1e-5)
    assert torch.equal(weights, torch.ones(len(weights)))


def test_expected_latency_of_decided_logits_is_the_sum_of_block_predictions(supernet) -> None:
    supernet.set_search()
    for b, path in zip(supernet.mixed_blocks(), PATHS, strict=True):
        b.arch_logits.data = torch.full((3,), -30.0)
        b.arch_logits.data[["skip", "lir", "mhsa"].index(path)] = 30.0
    pred = predictor()
    expected = expected_latency(supernet, pred, 64, 128)
    plain = predict_blocks(pred, network_blocks(supernet, 64, 128)).sum()
    assert expected.item() == pytest.approx(plain.item(), rel=1e-4)


def test_gradient_reaches_gates_and_architecture_logits(supernet) -> None:
    supernet.set_search()
    pred = predictor()
    loss = latency_loss(expected_latency(supernet, pred, 64, 128), target_ms=1e-3)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.arch_parameters())
    gated = [p for p in supernet.gate_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(gated) == len(supernet.gate_parameters())
    assert all(p.grad is None for p in supernet.weight_parameters())


def test_soft_widths_follow_the_gates(supernet) -> None:
    supernet.set_search()
    macs = FEATURE_NAMES.index("macs")
    with torch.no_grad():
        for p in supernet.gate_parameters():
            p.fill_(0.0)  # floor only
        low, _ = soft_features(supernet, 64, 128)
        for p in supernet.gate_parameters():
            p.fill_(1.0)
        high, _ = soft_features(supernet, 64, 128)
    gated_rows = (low[:, macs] < high[:, macs]).sum().item()
    assert gated_rows >= 7 + 3 + 1  # detail convs, down blocks, head at least
    assert torch.all(low[:, macs] <= high[:, macs])


def test_latency_loss_modes() -> None:
    over, under = torch.tensor(15.0), torch.tensor(5.0)
    assert latency_loss(over, 10.0).item() == pytest.approx(0.5)
    assert latency_loss(under, 10.0).item() == 0.0
    assert latency_loss(under, 10.0, "two-sided").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one-sided"):
        latency_loss(over, 10.0, "squared")


def test_bisenetv2_is_refused_with_a_reason() -> None:
    with pytest.raises(TypeError, match="gather-and-expand"):
        network_blocks(build_model("bisenetv2"), 64, 128)


def test_expected_gmacs_of_decided_logits_equal_the_derived_network_s_count(supernet) -> None:
    """Decided paths, randomized gates: the regularizer's value is what the counter finds in the
    derived network; its gradient reaches the gates and the architecture logits."""
    from search_client.search.derive import derive
    from search_client.search.latency import expected_gmacs

    supernet.set_search()
    for b, path in zip(supernet.mixed_blocks(), ["lir", "skip", "lir", "lir", "lir", "skip", "lir"], strict=True):
        b.arch_logits.data = torch.full((3,), -30.0)
        b.arch_logits.data[["skip", "lir", "mhsa"].index(path)] = 30.0
    gmacs = expected_gmacs(supernet, 64, 128)
    net = derive(supernet.eval()).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.randn(1, 3, 64, 128))
    assert gmacs.item() == pytest.approx(counter.get_total_flops() / 2e9, rel=1e-5)
    supernet.mixed_blocks()[0].arch_logits.data.zero_()  # undecided: gradient to the logits
    expected_gmacs(supernet, 64, 128).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.gate_parameters())
    assert supernet.mixed_blocks()[0].arch_logits.grad.abs().sum() > 0
