"""TFLite export and execution; runs only where the optional `tflite` extra is installed
(`make test-tflite`, which CI runs once in its own venv)."""

import numpy as np
import pytest
import torch

from shared.blocks import example_inputs
from shared.config import parse_block
from shared.export import export_block_tflite, seeded_block, sha256_bytes, tflite_available

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(not tflite_available(), reason="tflite extra not installed (make test-tflite)"),
]

CONFIGS = [
    {"kind": "conv", "cin": 3, "cout": 16, "kernel": 3, "stride": 2, "h": 32, "w": 64},
    {"kind": "lir", "cin": 32, "cmid": 96, "cout": 32, "kernel": 3, "stride": 1, "h": 16, "w": 16},
    {"kind": "mhsa", "cin": 32, "heads": 4, "patch": 2, "cmid": 64, "h": 8, "w": 8},
    {"kind": "bga", "cin": 16, "h": 16, "w": 32},
]


@pytest.mark.parametrize("raw", CONFIGS, ids=[c["kind"] for c in CONFIGS])
def test_tflite_matches_torch(raw):
    from ai_edge_litert.interpreter import Interpreter

    cfg = parse_block(raw)
    blob = export_block_tflite(cfg)
    inputs = example_inputs(cfg, seed=5)
    with torch.no_grad():
        expected = seeded_block(cfg)(*inputs).numpy()
    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    details = sorted(interp.get_input_details(), key=lambda d: d["index"])
    for detail, x in zip(details, inputs, strict=True):
        interp.set_tensor(detail["index"], x.numpy())
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-4, rtol=1e-4)


def test_tflite_export_is_deterministic():
    cfg = parse_block(CONFIGS[0])
    assert sha256_bytes(export_block_tflite(cfg)) == sha256_bytes(export_block_tflite(cfg))
