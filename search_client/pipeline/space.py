"""The campaign space of one supernet: every block its search can produce, at the searched size.

``shared.space.default_space()`` covers the paper-size supernet at 256x512 and 512x1024. A smaller
supernet (the demo's) only ever produces blocks up to its own widths, so its campaign samples those
ranges: each block of the full-mode supernet becomes a variant whose prunable widths range from a
floor to the supernet's width and whose other fields stay fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from search_client.search.latency import network_blocks
from shared.config import AnyBlock
from shared.space import IntRange, KindSpace, SearchSpace

# Fields the gates can shrink, per kind (the rest of a block is fixed by the architecture).
PRUNABLE: dict[str, tuple[str, ...]] = {
    "conv": ("cout",), "lir": ("cin", "clead", "cmid"), "down": ("cin", "clead", "cmid", "cout"),
    "mhsa": ("cmid",), "head": ("cin", "cmid"), "stem": ("cmid", "clead", "cout"), "context": ("cin",),
    "bga": ("cin",),
}
TIES = {"lir": {"cout": "cin"}}
# Fixed-shape kinds (one config each) get a small share; the searched kinds share the rest.
MINOR_WEIGHT = 0.02


def _variant(cfg: AnyBlock, floor: int) -> KindSpace:
    values = {k: v for k, v in cfg.model_dump().items() if k not in ("kind", "h", "w")}
    prunable = PRUNABLE.get(cfg.kind, ())
    fields: dict = {}
    for name, value in values.items():
        if name in TIES.get(cfg.kind, {}):
            continue
        if name in prunable or (cfg.kind == "conv" and name == "cin" and value > 3):
            fields[name] = IntRange(lo=min(floor, value), hi=value)
        else:
            fields[name] = [value]
    return KindSpace(fields=fields, sizes=[(cfg.h, cfg.w)], ties=TIES.get(cfg.kind, {}))


def supernet_space(supernet: nn.Module, sizes: Sequence[tuple[int, int]], floor: int = 4) -> SearchSpace:
    """Space of the blocks of ``supernet`` (full mode: LIR and MHSA paths) at each input size."""
    kinds: dict[str, dict[str, KindSpace]] = {}
    for h, w in sizes:
        for cfg in network_blocks(supernet, h, w):
            variant = _variant(cfg, floor)
            kinds.setdefault(cfg.kind, {})[variant.model_dump_json()] = variant
    weights = {k: (1.0 if k in PRUNABLE else MINOR_WEIGHT) for k in kinds}
    return SearchSpace(kinds={k: list(v.values()) for k, v in kinds.items()}, weights=weights)
