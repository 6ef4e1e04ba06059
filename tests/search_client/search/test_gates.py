"""DWBC gates: binary forward, straight-through gradient, floor, sharing along residual streams."""

from __future__ import annotations

import torch

from search_client.models.channel_gate import ChannelGate, gates_of


def test_forward_zeroes_exactly_the_channels_at_or_below_threshold() -> None:
    gate = ChannelGate(4, floor=1)
    gate.weight.data = torch.tensor([0.9, 0.5, 0.2, 0.51])
    x = torch.randn(2, 4, 3, 3)
    y = gate(x)
    assert torch.equal(y[:, [0, 3]], x[:, [0, 3]])
    assert torch.equal(y[:, [1, 2]], torch.zeros_like(y[:, [1, 2]]))
    assert gate.kept().tolist() == [True, False, False, True]


def test_straight_through_gradient_reaches_pruned_channels_too() -> None:
    gate = ChannelGate(3)
    gate.weight.data = torch.tensor([0.9, 0.1, 0.7])
    x = torch.randn(2, 3, 4, 4)
    g = torch.randn(2, 3, 4, 4)
    (gate(x) * g).sum().backward()
    expected = (x * g).sum(dim=(0, 2, 3))  # d(mask_c * x)/d mask_c, passed straight to w_c
    assert torch.allclose(gate.weight.grad, expected, atol=1e-5)
    assert gate.weight.grad[1] != 0


def test_floor_keeps_the_top_channels_by_value() -> None:
    gate = ChannelGate(5, floor=2)
    gate.weight.data = torch.tensor([0.1, 0.4, 0.3, 0.45, 0.0])
    assert gate.kept().tolist() == [False, True, False, True, False]
    assert gate.kept_count() == 2


def test_soft_count_is_the_kept_count_with_unit_gradients() -> None:
    gate = ChannelGate(6, init=0.6)
    gate.weight.data[:2] = 0.2
    count = gate.soft_count()
    assert count.item() == 4
    count.backward()
    assert torch.equal(gate.weight.grad, torch.ones(6))


def test_token_gate_acts_on_the_last_dim() -> None:
    gate = ChannelGate(4, dim=-1)
    gate.weight.data = torch.tensor([1.0, 0.0, 1.0, 0.0])
    y = gate(torch.ones(2, 5, 4))
    assert torch.equal(y[0, 0], torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_disabled_gate_passes_through() -> None:
    gate = ChannelGate(3, init=0.0)
    gate.enabled = False
    x = torch.randn(1, 3, 2, 2)
    assert torch.equal(gate(x), x)


def test_residual_stream_shares_one_gate(supernet) -> None:
    stage = supernet.stages[0]
    stream = stage.stream_gate()
    assert stream is not None
    assert all(b.lir.gate_out is stream for b in stage.mixed_blocks())
    assert supernet.stages[1].down.gate_in is stream  # again after the next shortcut's depthwise conv
    joint = supernet.stages[-1].stream_gate()  # tied to the detail branch through BGA
    assert joint is supernet.detail[-1].gate_out is supernet.context.gate_out is supernet.bga.gate_out
    gates = gates_of(supernet)
    assert len(gates) == len({id(g) for g in gates})
    assert sum(g is stream for g in gates) == 1


def test_a_gate_follows_every_conv_layer_of_the_inference_graph(supernet) -> None:
    """Every conv of the eval-mode graph (aux heads excluded) is followed by a gate before the next
    conv runs: the network is run with forward hooks recording the order of convs and gates."""
    convs = {
        id(m): name for name, m in supernet.named_modules()
        if isinstance(m, torch.nn.Conv2d) and not name.startswith("aux_heads")
    }  # fmt: skip
    pending: list[int] = []  # convs run since the last gate
    ungated: set[str] = set()

    def on_conv(m, i, o) -> None:
        ungated.update(convs[c] for c in pending)  # another conv ran before any gate
        pending[:] = [id(m)]

    hooks = [m.register_forward_hook(on_conv) for m in supernet.modules() if id(m) in convs]
    hooks += [g.register_forward_pre_hook(lambda g, i: pending.clear()) for g in gates_of(supernet)]
    supernet.set_active(["lir"] * len(supernet.mixed_blocks()))
    supernet.eval()
    with torch.no_grad():
        supernet(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    ungated.update(convs[c] for c in pending)
    # the classifier's outputs are the classes; a down block's 1x1 project meets its shortcut in the
    # add, and the gate after the add follows both
    expected = {"head.cls"} | {f"stages.{i}.down.project.0" for i in range(len(supernet.stages))}
    assert ungated == expected


def test_floor_applies_to_every_installed_gate(supernet) -> None:
    for gate in gates_of(supernet):
        gate.weight.data.zero_()
    assert all(g.kept_count() == g.floor >= 2 for g in gates_of(supernet))
