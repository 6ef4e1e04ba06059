"""Batched feature encoding for serving: the numbers of ``shared.encoding.encode_blocks``, computed
per kind on numpy arrays instead of block by block (a 10,000-block request must answer fast).

Exactness matters (the client rebuilds the module and must get identical numbers), so the
arithmetic mirrors ``shared.costs`` / ``shared.encoding`` on int64 arrays, and
``tests/profiler_server/predictor/test_encode.py`` checks bit equality on every kind. Stems (one
or two per network) go through the per-block encoder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from shared.config import CONFIG_CLASSES, KINDS, AnyBlock
from shared.costs import macs_of, params_of
from shared.encoding import FIELDS, N_FEATURES, _activations, encode_block

# Derived fields of ``shared.costs.block_fields`` per kind: (cout source, kernel, stride) defaults.
_COUT_FROM = {"mhsa": "cin", "context": "cin", "bga": "cin", "head": "classes"}
_FIXED = {"down": {"kernel": 3, "stride": 2}}


def _columns(kind: str, cfgs: list[AnyBlock]) -> dict[str, np.ndarray]:
    """``shared.costs.block_fields`` of every config, column by column (no ``model_dump``)."""
    names = [n for n in CONFIG_CLASSES[kind].model_fields if n != "kind"]
    v = {n: np.fromiter((c.__dict__[n] for c in cfgs), dtype=np.int64, count=len(cfgs)) for n in names}
    if "cout" not in v:
        v["cout"] = v[_COUT_FROM[kind]]
    for name, value in _FIXED.get(kind, {}).items():
        v[name] = np.full(len(cfgs), value, dtype=np.int64)
    for name, value in (("kernel", 3), ("stride", 1)):
        if name not in v:
            v[name] = np.full(len(cfgs), value, dtype=np.int64)
    return v


def _log2p1(x: np.ndarray) -> np.ndarray:
    return np.log2((1 + x).astype(np.float64))  # add in int64 first, as the Python ints do


def _encode_kind(kind: str, cfgs: list[AnyBlock]) -> np.ndarray:
    v = _columns(kind, cfgs)
    out = np.zeros((len(cfgs), N_FEATURES), dtype=np.float64)
    out[:, KINDS.index(kind)] = 1.0
    for j, name in enumerate(FIELDS):
        if name in v:
            out[:, len(KINDS) + j] = _log2p1(v[name])
    base = len(KINDS) + len(FIELDS)
    out[:, base] = _log2p1(np.asarray(macs_of(kind, v)))
    out[:, base + 1] = _log2p1(np.asarray(params_of(kind, v)))
    out[:, base + 2] = _log2p1(np.asarray(_activations(kind, v)))
    return out


@lru_cache(maxsize=100_000)
def _one(cfg: AnyBlock) -> tuple[float, ...]:
    return tuple(encode_block(cfg))


def encode_many(cfgs: Sequence[AnyBlock]) -> torch.Tensor:
    """(N, N_FEATURES) float32, equal to ``shared.encoding.encode_blocks(cfgs)``."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, cfg in enumerate(cfgs):
        by_kind[cfg.kind].append(i)
    out = np.zeros((len(cfgs), N_FEATURES), dtype=np.float32)
    for kind, idx in by_kind.items():
        group = [cfgs[i] for i in idx]
        if kind == "stem" or len(group) < 4:  # few blocks: the cached per-block path is faster
            out[idx] = np.array([_one(c) for c in group], dtype=np.float32)
        else:
            out[idx] = _encode_kind(kind, group).astype(np.float32)
    return torch.from_numpy(out)
