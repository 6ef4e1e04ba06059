"""Feature encoding of a block config for the latency predictor.

Order (``FEATURE_NAMES``), all float32:
  1. one-hot of ``kind`` over ``KINDS`` (8 values)
  2. ``log2(1 + v)`` of each field in ``FIELDS`` (0 where the kind has no such field)
  3. ``log2(1 + x)`` of the derived MACs, params, and input+output activation elements
  4. the alignment of each channel count in ``ALIGN_FIELDS``: how many of 2, 4, 8, 16 divide it
     (0 where the kind has no such field). Runtimes pack channels in blocks (onnxruntime's NCHWc
     layout on AVX2 uses blocks of 8, on AVX-512 of 16; mobile kernels often 4): a BGA block ran
     0.47 ms at 32 channels and 0.76 ms at 31 on this project's CPU host, a step that no smooth
     function of the log channel count represents.

The same code encodes plain configs (python numbers) and soft ones (torch tensors of channel
counts from the search client's gates), so the regularizer is differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from shared.config import KINDS, AnyBlock, parse_block
from shared.costs import Num, block_fields, ceil_div, macs_of, params_of

# 2: LIR and down at their Fig. 2 definition (leading 3x3 conv, ``clead``): a predictor fitted on
# version 1 features learned the older blocks and is refused by ``shared.predictor``.
# 3: channel alignment features (``ALIGN_FIELDS``); the server refits version-2 predictors at start.
FEATURE_VERSION = 3
FIELDS: tuple[str, ...] = (
    "cin", "cmid", "cout", "kernel", "stride", "h", "w", "heads", "patch", "classes", "scale", "clead",
)
DERIVED: tuple[str, ...] = ("macs", "params", "activations")
ALIGN_FIELDS: tuple[str, ...] = ("cin", "cmid", "cout", "clead")
ALIGN_BITS = 4  # alignment counts the powers 2, 4, 8 and 16
FEATURE_NAMES: tuple[str, ...] = (tuple(f"kind={k}" for k in KINDS) + FIELDS + DERIVED
                                  + tuple(f"align_{f}" for f in ALIGN_FIELDS))
N_FEATURES = len(FEATURE_NAMES)


def feature_spec() -> dict:
    """What a saved predictor records so a client can check it encodes the same way."""
    return {"version": FEATURE_VERSION, "names": list(FEATURE_NAMES), "transform": "log2(1+x)"}


def _log2p1(x: Num) -> Num:
    if isinstance(x, torch.Tensor):
        return torch.log2(1 + x)
    return math.log2(1 + x)


def alignment(channels: Num) -> Num:
    """How many of 2, 4, 8, 16 divide ``channels`` (the trailing zero bits, at most 4). A soft
    channel count (a tensor from the search's gates) is rounded first and carries no gradient here:
    the step is real, but it has no slope to follow."""
    if isinstance(channels, torch.Tensor):
        c = torch.round(channels.detach())
        return sum((torch.remainder(c, 2**k) == 0).to(channels.dtype) for k in range(1, ALIGN_BITS + 1))
    c = round(channels)
    return float(sum(c % 2**k == 0 for k in range(1, ALIGN_BITS + 1)))


def _activations(kind: str, v: Mapping[str, Num]) -> Num:
    hw_in = v["h"] * v["w"]
    stride = v.get("stride", 1)
    hw_out = ceil_div(v["h"], stride) * ceil_div(v["w"], stride)
    if kind in ("down", "stem"):
        factor = 2 if kind == "down" else 4
        hw_out = ceil_div(v["h"], factor) * ceil_div(v["w"], factor)
    if kind == "head":
        hw_out = hw_in * v["scale"] ** 2
    return hw_in * v["cin"] + hw_out * v["cout"]


def encode_values(kind: str, values: Mapping[str, Num]) -> list[Num]:
    """Feature list for one block; entries are floats or 0-d tensors (keeps autograd)."""
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r}; known: {', '.join(KINDS)}")
    onehot = [1.0 if kind == k else 0.0 for k in KINDS]
    fields = [_log2p1(values[f]) if f in values else 0.0 for f in FIELDS]
    derived = [_log2p1(macs_of(kind, values)), _log2p1(params_of(kind, values)), _log2p1(_activations(kind, values))]
    aligned = [alignment(values[f]) if f in values else 0.0 for f in ALIGN_FIELDS]
    return onehot + fields + derived + aligned


def encode_block(cfg: AnyBlock | dict) -> list[float]:
    if isinstance(cfg, dict):
        cfg = parse_block(cfg)
    return [float(x) for x in encode_values(cfg.kind, block_fields(cfg))]


def encode_blocks(cfgs: Sequence[AnyBlock | dict]) -> torch.Tensor:
    """(N, N_FEATURES) float32 tensor."""
    return torch.tensor([encode_block(c) for c in cfgs], dtype=torch.float32).reshape(-1, N_FEATURES)


def encode_soft(kind: str, values: Mapping[str, Num]) -> torch.Tensor:
    """(N_FEATURES,) tensor from possibly-differentiable values."""
    feats = encode_values(kind, values)
    return torch.stack([f if isinstance(f, torch.Tensor) else torch.tensor(float(f)) for f in feats]).float()


def decode_fields(features: Sequence[float]) -> dict:
    """Inverse of the encoding for the plain part: ``{"kind": ..., field: int, ...}`` (round trip)."""
    onehot = features[: len(KINDS)]
    kind = KINDS[max(range(len(KINDS)), key=lambda i: onehot[i])]
    out: dict = {"kind": kind}
    for name, x in zip(FIELDS, features[len(KINDS) : len(KINDS) + len(FIELDS)], strict=True):
        if x:
            out[name] = int(round(2**x - 1))
    return out
