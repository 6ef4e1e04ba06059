import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.blocks import create_block, example_inputs, input_shapes
from shared.config import KINDS, parse_block
from shared.costs import block_macs, block_params
from shared.export import export_block_onnx, seeded_block, sha256_bytes

CONFIGS = [
    {"kind": "conv", "cin": 3, "cout": 16, "kernel": 3, "stride": 2, "h": 33, "w": 64},
    {"kind": "conv", "cin": 64, "cout": 64, "kernel": 1, "stride": 1, "h": 16, "w": 16},
    {"kind": "lir", "cin": 32, "cmid": 96, "cout": 32, "kernel": 3, "stride": 1, "h": 32, "w": 64},
    {"kind": "lir", "cin": 32, "cmid": 96, "cout": 64, "kernel": 5, "stride": 2, "h": 31, "w": 63},
    {"kind": "down", "cin": 32, "cmid": 128, "cout": 64, "h": 32, "w": 64},
    {"kind": "down", "cin": 16, "cmid": 48, "cout": 16, "h": 15, "w": 9},
    {"kind": "mhsa", "cin": 64, "heads": 4, "patch": 2, "cmid": 256, "h": 16, "w": 32},
    {"kind": "mhsa", "cin": 32, "heads": 2, "patch": 1, "cmid": 64, "h": 8, "w": 8},
    {"kind": "stem", "cin": 3, "cout": 16, "h": 64, "w": 128},
    {"kind": "stem", "cin": 3, "cout": 32, "h": 50, "w": 70},
    {"kind": "context", "cin": 128, "h": 16, "w": 32},
    {"kind": "bga", "cin": 64, "h": 32, "w": 64},
    {"kind": "head", "cin": 128, "cmid": 256, "classes": 19, "scale": 8, "h": 16, "w": 32},
    {"kind": "head", "cin": 16, "cmid": 32, "classes": 5, "scale": 1, "h": 10, "w": 12},
]
IDS = [f"{c['kind']}-{i}" for i, c in enumerate(CONFIGS)]


def test_every_kind_is_covered():
    assert {c["kind"] for c in CONFIGS} == set(KINDS)


@pytest.mark.parametrize("raw", CONFIGS, ids=IDS)
def test_block_runs_with_expected_output_shape(raw):
    cfg = parse_block(raw)
    out = create_block(cfg).eval()(*example_inputs(cfg))
    assert out.shape == (1, cfg.out_channels, *cfg.out_size())
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("raw", CONFIGS, ids=IDS)
def test_analytic_costs_match_torch(raw):
    cfg = parse_block(raw)
    module = create_block(cfg).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*example_inputs(cfg))
    assert block_macs(cfg) == counter.get_total_flops() // 2
    assert block_params(cfg) == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("raw", CONFIGS, ids=IDS)
def test_onnx_export_matches_torch_and_is_deterministic(raw):
    cfg = parse_block(raw)
    blob = export_block_onnx(cfg)
    assert sha256_bytes(blob) == sha256_bytes(export_block_onnx(cfg))
    inputs = example_inputs(cfg, seed=3)
    with torch.no_grad():
        expected = seeded_block(cfg)(*inputs).numpy()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in session.get_inputs()] == input_shapes(cfg)
    got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_different_configs_give_different_artifacts():
    a, b = parse_block(CONFIGS[0]), parse_block({**CONFIGS[0], "cout": 17})
    assert sha256_bytes(export_block_onnx(a)) != sha256_bytes(export_block_onnx(b))
