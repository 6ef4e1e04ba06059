"""A tiny supernet with random gates and BN statistics, so pruning and folding really matter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_client.models import RTSegSupernet, build_model
from search_client.models.channel_gate import gates_of

TINY = dict(
    detail_widths=(8, 12, 16), stem=8, stage_widths=(12, 16, 16), depths=(2, 2, 3), heads=(2, 2, 4),
    mhsa_mid=(16, 16, 32), head_mid=32, aux_mid=8,
)  # fmt: skip


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Random gate values (about half pruned) and non-trivial BN statistics and affine terms."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gates_of(model):
            gate.weight.copy_(torch.rand(gate.weight.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)


@pytest.fixture
def supernet() -> RTSegSupernet:
    torch.manual_seed(0)
    model = build_model("supernet", num_classes=5, config=TINY)
    model.install_gates(min_channels=2)
    randomize(model)
    return model
