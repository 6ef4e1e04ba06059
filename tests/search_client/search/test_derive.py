"""Derivation: the compact network computes what the gated supernet computes (eval mode)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_client.count import inference_params
from search_client.models import build_model
from search_client.models.channel_gate import gates_of
from search_client.search.derive import derive, subnet_spec
from search_client.search.latency import network_blocks
from shared.costs import block_macs, block_params

CHOICES = [
    ["lir", "skip", "lir", "lir", "mhsa", "skip", "lir"],  # stages 1-2 without attention: streams pruned
    ["mhsa", "lir", "skip", "mhsa", "lir", "lir", "skip"],  # attention keeps streams full
    ["skip"] * 7,
    ["lir", "lir", "skip", "lir", "lir", "skip", "lir"],  # no attention: the joint BGA width is pruned too
]


@pytest.mark.parametrize("paths", CHOICES)
def test_derived_output_equals_gated_supernet_at_two_resolutions(supernet, paths: list[str]) -> None:
    supernet.set_active({"paths": paths})
    supernet.eval()
    net = derive(supernet).eval()
    assert inference_params(net) < inference_params(supernet)
    for h, w in ((64, 128), (96, 64)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref, out = supernet(x), net(x)
        assert out.shape == (2, 5, h, w)
        assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def test_derived_network_really_has_fewer_channels(supernet) -> None:
    supernet.set_active({"paths": CHOICES[0]})
    net = derive(supernet)
    kept = [g.kept_count() for g in gates_of(supernet)]
    assert min(kept) < max(g.channels for g in gates_of(supernet))
    stream = supernet.stages[0].stream_gate().kept_count()
    assert net.stages[0].down.project[0].out_channels == stream
    assert net.detail[0].conv[0].out_channels == supernet.detail[0].gate_out.kept_count()


def test_every_gated_part_is_physically_smaller(supernet) -> None:
    """Stem, the joint width (last detail conv, last stage, context, BGA, head input), the leading
    convs and the head's hidden width all lose their pruned channels."""
    supernet.set_active({"paths": CHOICES[3]})
    net = derive(supernet)
    joint = supernet.bga.gate_out.kept_count()
    stem = supernet.stem
    assert joint < supernet.bga.fuse[0].out_channels
    assert net.detail[-1].conv[0].out_channels == net.stages[-1].down.project[0].out_channels == joint
    assert net.context.last[0].out_channels == net.bga.fuse[0].out_channels == joint
    assert net.head.conv[0].in_channels == joint
    assert net.stem.conv[0].out_channels == stem.gate_mid.kept_count() < stem.conv[0].out_channels
    assert net.stem.left[0][0].out_channels == stem.gate_lead.kept_count()
    assert net.stem.fuse[0].out_channels == stem.gate_out.kept_count() < stem.fuse[0].out_channels
    lead = supernet.stages[0].down.gate_lead
    assert net.stages[0].down.lead[0].out_channels == lead.kept_count() < lead.channels
    assert inference_params(net) < 0.6 * inference_params(supernet)


def test_search_mode_derives_the_argmax_paths(supernet) -> None:
    supernet.set_search(tau=1.0)
    for b, path in zip(supernet.mixed_blocks(), CHOICES[1], strict=True):
        b.arch_logits.data = torch.nn.functional.one_hot(
            torch.tensor(["skip", "lir", "mhsa"].index(path)), 3
        ).float()
    supernet.eval()
    net = derive(supernet).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), supernet(x), atol=1e-4)
    blocks = [b for st in subnet_spec(supernet)["stages"] for b in st["blocks"]]
    assert [b["path"] for b in blocks] == [p for p in CHOICES[1] if p != "skip"]


def test_spec_round_trip_rebuilds_the_same_architecture(supernet) -> None:
    supernet.set_active({"paths": CHOICES[0]})
    net = derive(supernet)
    rebuilt = build_model("subnet", num_classes=5, spec=json.dumps(subnet_spec(supernet)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }
    rebuilt.load_state_dict(net.state_dict())


def test_block_list_of_derived_net_equals_that_of_gated_supernet_and_its_counter(supernet) -> None:
    supernet.set_active({"paths": CHOICES[0]})
    supernet.eval()
    net = derive(supernet).eval()
    blocks = network_blocks(net, 64, 128)
    assert blocks == network_blocks(supernet, 64, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.randn(1, 3, 64, 128))
    assert sum(block_macs(b) for b in blocks) == counter.get_total_flops() // 2
    assert sum(block_params(b) for b in blocks) == inference_params(net)


def test_sampled_paths_and_widths_derive_exactly(supernet) -> None:
    import random

    config = supernet.sample_active(random.Random(7), widths=True)
    assert supernet.active_config()["widths"] == config["widths"]
    supernet.eval()
    net = derive(supernet).eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.allclose(net(x), supernet(x), atol=1e-4)


def test_bad_widths_are_named(supernet) -> None:
    with pytest.raises(ValueError, match="no gate named 'head.nope'"):
        supernet.set_active({"paths": ["lir"] * 7, "widths": {"head.nope": 3}})
    with pytest.raises(ValueError, match=r"width 999 of head.gate_mid outside \[\d+, 32\]"):
        supernet.set_active({"paths": ["lir"] * 7, "widths": {"head.gate_mid": 999}})


def test_full_mode_cannot_be_derived(supernet) -> None:
    with pytest.raises(ValueError, match="full mode"):
        derive(supernet)


def test_derived_net_keeps_the_training_contract(supernet) -> None:
    supernet.set_active({"paths": CHOICES[0]})
    net = derive(supernet).train()
    out = net(torch.randn(2, 3, 64, 64))
    assert out["out"].shape == (2, 5, 64, 64) and len(out["aux"]) == 4


def test_derived_net_exports_to_onnx_with_the_same_output(supernet) -> None:
    import numpy as np
    import onnxruntime as ort

    from shared.export import export_module_onnx

    supernet.set_active({"paths": CHOICES[0]})
    net = derive(supernet).eval()
    x = torch.randn(1, 3, 64, 96)
    session = ort.InferenceSession(export_module_onnx(net, [x]), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - ref).max() < 1e-4
