"""RTSeg supernet: the model contract, its size, the parameter split and the registry."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_client.count import inference_params
from search_client.models import available_archs, build_model, register_subnet
from search_client.search.latency import network_blocks
from shared.costs import block_macs, block_params

TINY = dict(
    detail_widths=(8, 12, 16), stem=8, stage_widths=(8, 12, 16), depths=(1, 2, 2), heads=(2, 2, 4),
    mhsa_mid=(16, 16, 32), head_mid=32, aux_mid=8,
)  # fmt: skip


def tiny(num_classes: int = 4):
    torch.manual_seed(0)
    return build_model("supernet", num_classes=num_classes, config=TINY)


def test_registry_lists_the_architectures_and_rejects_unknown_names() -> None:
    assert {"bisenetv2", "supernet", "subnet"} <= set(available_archs())
    with pytest.raises(ValueError, match="available: .*bisenetv2"):
        build_model("resnet50")


def test_contract_in_train_and_eval_mode() -> None:
    model = tiny().train()
    out = model(torch.randn(2, 3, 64, 128))
    assert out["out"].shape == (2, 4, 64, 128)
    assert [a.shape for a in out["aux"]] == [(2, 4, 64, 128)] * 4
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 128)).shape == (1, 4, 64, 128)


def test_odd_input_sizes_are_padded_and_cropped_back() -> None:
    model = tiny().eval()
    x = torch.randn(1, 3, 72, 100)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    assert out.shape == (1, 4, 72, 100)
    padded = torch.nn.functional.pad(x, (0, 28, 0, 24))
    with torch.no_grad():
        assert torch.equal(out, model(padded)[:, :, :72, :100])
    assert sum(block_macs(b) for b in network_blocks(model, 72, 100)) == counter.get_total_flops() // 2


def test_full_size_block_list_gives_the_paper_size() -> None:
    """Analytic counts over the whole-network block list (equal to the torch counter, see below)."""
    with torch.device("meta"):
        model = build_model("supernet").eval()
    blocks = network_blocks(model, 512, 1024)
    assert sum(block_macs(b) for b in blocks) / 1e9 == pytest.approx(136.0, rel=0.05)
    assert sum(block_params(b) for b in blocks) / 1e6 == pytest.approx(24.43, rel=0.05)


def test_block_list_matches_torch_counter_and_parameters_in_full_mode() -> None:
    model = tiny().eval()
    blocks = network_blocks(model, 64, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 64, 128))
    assert sum(block_macs(b) for b in blocks) == counter.get_total_flops() // 2
    assert sum(block_params(b) for b in blocks) == inference_params(model)
    assert sum(b.kind in ("lir", "mhsa") for b in blocks) == 2 * 5  # both paths of 5 mixed blocks


def test_parameter_groups_split_the_model_exactly() -> None:
    model = tiny()
    model.install_gates()
    arch = {id(p) for p in model.arch_parameters()}
    gates = {id(p) for p in model.gate_parameters()}
    weights = {id(p) for p in model.weight_parameters()}
    assert len(arch) == 5 and len(gates) > 10
    assert not (arch & gates) and not (arch & weights) and not (gates & weights)
    assert arch | gates | weights == {id(p) for p in model.parameters()}


def test_set_active_and_sample_active_fix_the_paths() -> None:
    model = tiny()
    model.set_active({"paths": ["skip", "lir", "mhsa", "lir", "skip"]})
    assert model.active_config()["paths"] == ["skip", "lir", "mhsa", "lir", "skip"]
    config = model.sample_active(random.Random(3))
    assert model.active_config()["paths"] == config["paths"]
    with pytest.raises(ValueError, match="need 5 paths"):
        model.set_active(["lir"])
    with pytest.raises(ValueError, match="unknown path 'conv'"):
        model.set_active(["conv"] * 5)


def test_sample_active_runs_only_the_chosen_paths() -> None:
    model = tiny().eval()
    config = model.sample_active(random.Random(1))
    ran = []
    for i, b in enumerate(model.mixed_blocks()):
        b.lir.register_forward_hook(lambda *_, i=i: ran.append((i, "lir")))
        b.mhsa.register_forward_hook(lambda *_, i=i: ran.append((i, "mhsa")))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 128))
    assert ran == [(i, p) for i, p in enumerate(config["paths"]) if p != "skip"]


def test_subnet_from_spec_file_text_and_registered_name(tmp_path: Path) -> None:
    spec = {
        "num_classes": 4, "stem": 8, "head_mid": 16, "aux_mid": 8,
        "detail": [{"cin": 3, "cout": 8, "stride": 2}, {"cin": 8, "cout": 8, "stride": 2},
                   {"cin": 8, "cout": 16, "stride": 2}],
        "stages": [{"down": {"cin": 8, "cmid": 16, "cout": 8}, "blocks": [{"path": "lir", "cmid": 24}]},
                   {"down": {"cin": 8, "cmid": 16, "cout": 12}, "blocks": []},
                   {"down": {"cin": 12, "cmid": 24, "cout": 16},
                    "blocks": [{"path": "mhsa", "heads": 2, "patch": 1, "cmid": 32}]}],
    }  # fmt: skip
    path = tmp_path / "subnet.json"
    path.write_text(json.dumps(spec))
    a = build_model("subnet", num_classes=4, spec=path)
    b = build_model("subnet", num_classes=4, spec=json.dumps(spec))
    register_subnet("tiny-test", spec)
    c = build_model("tiny-test", num_classes=4)
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (a, b, c)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert a.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_subnet_spec_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs spec="):
        build_model("subnet")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        build_model("subnet", spec=tmp_path / "missing.json")
    bad = {"num_classes": 4, "stem": 8, "head_mid": 16,
           "detail": [{"cin": 3, "cout": 8, "stride": 2}] * 3,
           "stages": [{"down": {"cin": 8, "cmid": 16, "cout": 8}}] * 3}  # fmt: skip
    with pytest.raises(ValueError, match="BGA joins equal widths|do not chain"):
        build_model("subnet", spec=bad)
