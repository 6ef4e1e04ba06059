"""Export blocks (and whole networks) to deployable artifacts keyed by content hash.

ONNX: one self-contained file (no external-data sidecar), opset ``OPSET``, legacy TorchScript
exporter (10x faster than dynamo and deterministic), weights seeded from the config hash so the
same config always gives the same bytes. TFLite: through the optional ``tflite`` extra.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from shared.blocks import create_block, example_inputs
from shared.config import AnyBlock

OPSET = 17


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seeded_block(cfg: AnyBlock) -> nn.Module:
    """The block with deterministic weights and non-trivial BN statistics, in eval mode."""
    seed = int(cfg.key(), 16) % (2**31)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = create_block(cfg)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def export_module_onnx(module: nn.Module, inputs: Sequence[torch.Tensor]) -> bytes:
    """Serialize an eval-mode module to ONNX bytes (fixed opset, no sidecar, no doc strings)."""
    names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            tuple(inputs),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=["output"],
            do_constant_folding=True,
        )
    return buf.getvalue()


def export_block_onnx(cfg: AnyBlock) -> bytes:
    return export_module_onnx(seeded_block(cfg), example_inputs(cfg))


def tflite_available() -> bool:
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


def export_module_tflite(module: nn.Module, inputs: Sequence[torch.Tensor]) -> bytes:
    """TFLite flatbuffer bytes via litert-torch (install the ``tflite`` extra in its own venv)."""
    try:
        import litert_torch
    except ImportError as exc:
        raise RuntimeError(
            "TFLite export needs the optional extra: pip install '.[tflite]' (in a separate venv, see README)"
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        litert_torch.convert(module.eval(), tuple(inputs)).export(path)
        return Path(path).read_bytes()


def export_block_tflite(cfg: AnyBlock) -> bytes:
    return export_module_tflite(seeded_block(cfg), example_inputs(cfg))


def export_block(cfg: AnyBlock, fmt: str = "onnx") -> bytes:
    if fmt == "onnx":
        return export_block_onnx(cfg)
    if fmt == "tflite":
        return export_block_tflite(cfg)
    raise ValueError(f"unknown artifact format {fmt!r}; use 'onnx' or 'tflite'")
