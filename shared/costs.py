"""Analytic MACs and parameter counts per block kind.

MACs count what ``torch.utils.flop_counter`` counts (convolutions and matrix products; flops / 2):
BN, activations, pooling, adds and resizes are free. Params equal ``sum(p.numel())`` of the module.

The formulas use only arithmetic, so they work on ints *and* on torch tensors: the search client
feeds soft channel counts (gate sums) and gets differentiable MACs for the latency regularizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.config import AnyBlock, BGAConfig, ContextConfig, DownConfig, HeadConfig, MHSAConfig

Num = Any  # int, float or torch.Tensor


def ceil_div(size: int, stride: int) -> int:
    return (size + stride - 1) // stride


def block_fields(cfg: AnyBlock) -> dict[str, int]:
    """Every numeric field of a config, with derived ones made explicit (cout, kernel, stride)."""
    values = {k: v for k, v in cfg.model_dump().items() if k not in ("kind", "definition")}
    values.setdefault("cout", cfg.out_channels)
    if isinstance(cfg, DownConfig):
        values.update(kernel=3, stride=2)
    if isinstance(cfg, MHSAConfig | ContextConfig | BGAConfig | HeadConfig):
        values.setdefault("kernel", 3)
    values.setdefault("stride", 1)
    return values


def _conv_macs(v: Mapping[str, Num]) -> Num:
    s = v["stride"]
    return ceil_div(v["h"], s) * ceil_div(v["w"], s) * v["cin"] * v["cout"] * v["kernel"] ** 2


def _lir_macs(v: Mapping[str, Num]) -> Num:
    s, k = v["stride"], v["kernel"]
    hw_out = ceil_div(v["h"], s) * ceil_div(v["w"], s)
    lead = v["h"] * v["w"] * v["clead"] * (v["cin"] * 9 + v["cmid"])  # 3x3 conv and 1x1 expand
    return lead + hw_out * v["cmid"] * (k * k + v["cout"])


def _down_macs(v: Mapping[str, Num]) -> Num:
    hw = v["h"] * v["w"]
    hw_out = ceil_div(v["h"], 2) * ceil_div(v["w"], 2)
    cin, clead, cmid, cout = v["cin"], v["clead"], v["cmid"], v["cout"]
    main = hw * clead * (cin * 9 + cmid) + hw_out * cmid * (9 + 9 + cout)
    return main + hw_out * cin * (9 + cout)


def _mhsa_macs(v: Mapping[str, Num]) -> Num:
    p2 = v["patch"] ** 2
    n = v["h"] * v["w"] // p2
    d = v["cin"] * p2
    return n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * v["cmid"]


def _stem_macs(v: Mapping[str, Num]) -> Num:
    mid, lead = v["cmid"], v["clead"]
    h1, w1 = ceil_div(v["h"], 2), ceil_div(v["w"], 2)
    h2, w2 = ceil_div(h1, 2), ceil_div(w1, 2)
    return h1 * w1 * (v["cin"] * mid * 9 + mid * lead) + h2 * w2 * (lead * mid * 9 + 2 * mid * v["cout"] * 9)


def _context_macs(v: Mapping[str, Num]) -> Num:
    c = v["cin"]
    return c * c + v["h"] * v["w"] * c * c * 9


def _bga_macs(v: Mapping[str, Num]) -> Num:
    c, h, w = v["cin"], v["h"], v["w"]
    hw, hw2, hw4 = h * w, ceil_div(h, 2) * ceil_div(w, 2), (h // 4) * (w // 4)
    return hw * c * (9 + c) + hw2 * c * c * 9 + hw4 * (c * c * 9 + c * 9 + c * c) + hw * c * c * 9


def _head_macs(v: Mapping[str, Num]) -> Num:
    return v["h"] * v["w"] * v["cmid"] * (v["cin"] * 9 + v["classes"])


_BN = 2  # BatchNorm weight + bias per channel


def _conv_params(v: Mapping[str, Num]) -> Num:
    return v["cin"] * v["cout"] * v["kernel"] ** 2 + _BN * v["cout"]


def _lir_params(v: Mapping[str, Num]) -> Num:
    cin, clead, cmid, cout = v["cin"], v["clead"], v["cmid"], v["cout"]
    lead = cin * clead * 9 + _BN * clead
    return lead + clead * cmid + cmid * v["kernel"] ** 2 + cmid * cout + _BN * (2 * cmid + cout)


def _down_params(v: Mapping[str, Num]) -> Num:
    cin, clead, cmid, cout = v["cin"], v["clead"], v["cmid"], v["cout"]
    lead = cin * clead * 9 + _BN * clead
    main = lead + clead * cmid + 2 * cmid * 9 + cmid * cout + _BN * (3 * cmid + cout)
    short = cin * 9 + cin * cout + _BN * (cin + cout)
    return main + short


def _mhsa_params(v: Mapping[str, Num]) -> Num:
    d, cmid = v["cin"] * v["patch"] ** 2, v["cmid"]
    return 2 * d + 3 * d * d + 3 * d + d * d + d + 2 * d + d * cmid + cmid + cmid * d + d


def _stem_params(v: Mapping[str, Num]) -> Num:
    mid, lead, cout = v["cmid"], v["clead"], v["cout"]
    convs = v["cin"] * mid * 9 + mid * lead + lead * mid * 9 + 2 * mid * cout * 9
    return convs + _BN * (2 * mid + lead + cout)


def _context_params(v: Mapping[str, Num]) -> Num:
    c = v["cin"]
    return c * c + c * c * 9 + _BN * 3 * c


def _bga_params(v: Mapping[str, Num]) -> Num:
    c = v["cin"]
    return 2 * (c * 9 + c * c) + 3 * c * c * 9 + _BN * 5 * c


def _head_params(v: Mapping[str, Num]) -> Num:
    cmid, classes = v["cmid"], v["classes"]
    return v["cin"] * cmid * 9 + _BN * cmid + cmid * classes + classes


MACS = {
    "conv": _conv_macs,
    "lir": _lir_macs,
    "down": _down_macs,
    "mhsa": _mhsa_macs,
    "stem": _stem_macs,
    "context": _context_macs,
    "bga": _bga_macs,
    "head": _head_macs,
}
PARAMS = {
    "conv": _conv_params,
    "lir": _lir_params,
    "down": _down_params,
    "mhsa": _mhsa_params,
    "stem": _stem_params,
    "context": _context_params,
    "bga": _bga_params,
    "head": _head_params,
}


def macs_of(kind: str, values: Mapping[str, Num]) -> Num:
    return MACS[kind](values)


def params_of(kind: str, values: Mapping[str, Num]) -> Num:
    return PARAMS[kind](values)


def block_macs(cfg: AnyBlock) -> int:
    return int(macs_of(cfg.kind, block_fields(cfg)))


def block_params(cfg: AnyBlock) -> int:
    return int(params_of(cfg.kind, block_fields(cfg)))
