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
from shared.encoding import ALIGN_BITS, ALIGN_FIELDS, FIELDS, N_FEATURES, _activations, encode_block

# Derived fields of ``shared.costs.block_fields`` per kind: (cout source, kernel, stride) defaults.
_COUT_FROM = {"mhsa": "cin", "context": "cin", "bga": "cin", "head": "classes"}
_FIXED = {"down": {"kernel": 3, "stride": 2}}


def _columns(kind: str, cfgs: list[AnyBlock]) -> dict[str, np.ndarray]:
    """``shared.costs.block_fields`` of every config, column by column (no ``model_dump``)."""
    names = [n for n in CONFIG_CLASSES[kind].model_fields if n != "kind"]
    v = {n: np.fromiter((c.__dict__[n] for c in cfgs), dtype=np.int64, count=len(cfgs)) for n in names}
    return _with_derived(kind, v, len(cfgs))


def _with_derived(kind: str, v: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The fields a kind derives (its cout, a fixed kernel or stride) added to its own columns."""
    if "cout" not in v:
        v["cout"] = v[_COUT_FROM[kind]]
    for name, value in _FIXED.get(kind, {}).items():
        v[name] = np.full(n, value, dtype=np.int64)
    for name, value in (("kernel", 3), ("stride", 1)):
        if name not in v:
            v[name] = np.full(n, value, dtype=np.int64)
    return v


def _log2p1(x: np.ndarray) -> np.ndarray:
    return np.log2((1 + x).astype(np.float64))  # add in int64 first, as the Python ints do


def _encode_values(kind: str, v: dict[str, np.ndarray], n: int) -> np.ndarray:
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    out[:, KINDS.index(kind)] = 1.0
    for j, name in enumerate(FIELDS):
        if name in v:
            out[:, len(KINDS) + j] = _log2p1(v[name])
    base = len(KINDS) + len(FIELDS)
    out[:, base] = _log2p1(np.asarray(macs_of(kind, v)))
    out[:, base + 1] = _log2p1(np.asarray(params_of(kind, v)))
    out[:, base + 2] = _log2p1(np.asarray(_activations(kind, v)))
    for j, name in enumerate(ALIGN_FIELDS):
        if name in v:
            out[:, base + 3 + j] = sum(v[name] % 2**k == 0 for k in range(1, ALIGN_BITS + 1))
    return out


def _encode_kind(kind: str, cfgs: list[AnyBlock]) -> np.ndarray:
    return _encode_values(kind, _columns(kind, cfgs), len(cfgs))


def encode_columns(kind: str, names: Sequence[str], values: np.ndarray) -> np.ndarray:
    """(N, N_FEATURES) float32 features of N configs of ``kind`` given as an (N, len(names)) int64
    matrix of their fields (a config class's fields, ``kind`` left out, computed defaults filled),
    equal to ``encode_many`` of the same configs."""
    n = len(values)
    if kind == "stem":  # one or two per network: the cached per-block path, as in encode_many
        cls = CONFIG_CLASSES[kind]
        return np.array([_one(cls(**dict(zip(names, row, strict=True)))) for row in values.tolist()],
                        dtype=np.float32).reshape(n, N_FEATURES)  # fmt: skip
    v = {name: values[:, j] for j, name in enumerate(names)}
    return _encode_values(kind, _with_derived(kind, v, n), n).astype(np.float32)


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
