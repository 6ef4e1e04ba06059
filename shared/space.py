"""Declarative search spaces of block configurations, and seeded sampling from them.

A :class:`SearchSpace` maps each block kind to one or more :class:`KindSpace` variants; a variant
gives, per field, an inclusive integer range or a set of values, plus the feature sizes ``(h, w)``
the block sees and fields tied to another field (an LIR block in a mixed block keeps ``cout == cin``).
Sampling builds real ``BlockConfig``s and draws again when a combination is invalid (MHSA heads
must divide ``cin``), a bounded number of times.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.config import KINDS, AnyBlock, parse_block

log = logging.getLogger(__name__)
MAX_TRIES_PER_CONFIG = 200


class IntRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lo: int = Field(ge=1, le=1_000_000)
    hi: int = Field(ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.lo > self.hi:
            raise ValueError(f"range lo ({self.lo}) must be <= hi ({self.hi})")
        return self

    def pick(self, u: float) -> int:
        """The value at quantile ``u`` in [0, 1) of the range."""
        return min(self.hi, self.lo + int(u * (self.hi - self.lo + 1)))


FieldSpec = IntRange | list[int]


class KindSpace(BaseModel):
    """One variant of a kind: field specs, feature sizes, and ties (``{"cout": "cin"}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fields: dict[str, FieldSpec] = Field(default_factory=dict, max_length=32)
    sizes: list[tuple[int, int]] = Field(min_length=1, max_length=256)
    ties: dict[str, str] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _non_empty_sets(self) -> KindSpace:
        for name, spec in self.fields.items():
            if isinstance(spec, list) and not spec:
                raise ValueError(f"field {name!r} has an empty set of values")
        return self


class SearchSpace(BaseModel):
    """Per block kind, the variants to sample from; ``weights`` set the share of each kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kinds: dict[str, list[KindSpace]] = Field(min_length=1)
    weights: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_kinds(self) -> SearchSpace:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown block kinds {unknown}; known: {list(KINDS)}")
        for kind, variants in self.kinds.items():
            if not variants:
                raise ValueError(f"kind {kind!r} has no variants")
        return self

    def kind_weight(self, kind: str) -> float:
        return max(0.0, self.weights.get(kind, 1.0))


def _value(spec: FieldSpec, u: float) -> int:
    if isinstance(spec, IntRange):
        return spec.pick(u)
    return spec[min(len(spec) - 1, int(u * len(spec)))]


def _build(kind: str, variant: KindSpace, quantiles: dict[str, float], rng: random.Random) -> AnyBlock | None:
    """A config from per-field quantiles (missing ones drawn from ``rng``); None when invalid."""
    h, w = variant.sizes[
        min(len(variant.sizes) - 1, int(quantiles.get("size", rng.random()) * len(variant.sizes)))
    ]
    values: dict[str, int | str] = {"kind": kind, "h": h, "w": w}
    for name, spec in variant.fields.items():
        values[name] = _value(spec, quantiles.get(name, rng.random()))
    for name, source in variant.ties.items():
        values[name] = values[source]
    try:
        return parse_block(values)
    except ValidationError:
        return None


def _draw(space: SearchSpace, kind: str, rng: random.Random) -> AnyBlock | None:
    for _ in range(MAX_TRIES_PER_CONFIG):
        cfg = _build(kind, rng.choice(space.kinds[kind]), {}, rng)
        if cfg is not None:
            return cfg
    log.warning("no valid %s config after %d draws: check the space", kind, MAX_TRIES_PER_CONFIG)
    return None


def _unique(configs: Iterator[AnyBlock | None], n: int, limit: int) -> list[AnyBlock]:
    """The first ``n`` distinct valid configs among at most ``limit`` candidates."""
    seen: set[str] = set()
    out: list[AnyBlock] = []
    for i, cfg in enumerate(configs):
        if len(out) >= n or i >= limit:
            break
        if cfg is not None and cfg.key() not in seen:
            seen.add(cfg.key())
            out.append(cfg)
    return out


def sample_uniform(space: SearchSpace, n: int, seed: int = 0) -> list[AnyBlock]:
    """``n`` distinct configs: kind by weight, variant and every field uniformly (seeded).

    Fewer than ``n`` come back only when the space holds fewer distinct valid configs.
    """
    rng = random.Random(seed)
    kinds = [k for k in space.kinds if space.kind_weight(k) > 0]
    weights = [space.kind_weight(k) for k in kinds]

    def stream() -> Iterator[AnyBlock | None]:
        while True:
            yield _draw(space, rng.choices(kinds, weights)[0], rng)

    return _unique(stream(), n, limit=20 * n + 100)


def _kind_counts(space: SearchSpace, n: int) -> dict[str, int]:
    kinds = [k for k in space.kinds if space.kind_weight(k) > 0]
    total = sum(space.kind_weight(k) for k in kinds)
    counts = {k: int(n * space.kind_weight(k) / total) for k in kinds}
    for k in kinds[: n - sum(counts.values())]:  # hand out the rounding remainder
        counts[k] += 1
    return counts


def _stratified_kind(space: SearchSpace, kind: str, m: int, rng: random.Random) -> Iterator[AnyBlock | None]:
    """Latin hypercube over each variant's fields and sizes: every field's range is cut into ``m``
    strata and each stratum is used once, so small campaigns still cover the corners."""
    variants = space.kinds[kind]
    per_variant = [m // len(variants) + (1 if i < m % len(variants) else 0) for i in range(len(variants))]
    for variant, count in zip(variants, per_variant, strict=True):
        axes = ["size", *variant.fields]
        strata = {a: rng.sample(range(count), count) for a in axes}
        for i in range(count):
            quantiles = {a: (strata[a][i] + rng.random()) / count for a in axes}
            cfg = _build(kind, variant, quantiles, rng)
            yield cfg if cfg is not None else _draw(space, kind, rng)
    while True:  # top up after duplicates with uniform draws
        yield _draw(space, kind, rng)


def sample_stratified(space: SearchSpace, n: int, seed: int = 0) -> list[AnyBlock]:
    """``n`` distinct configs split over kinds by weight, Latin-hypercube stratified per kind."""
    rng = random.Random(seed)
    out: list[AnyBlock] = []
    for kind, count in _kind_counts(space, n).items():
        if count:
            out.extend(_unique(_stratified_kind(space, kind, count, rng), count, limit=20 * count + 100))
    rng.shuffle(out)  # measure in random order (thermal drift must not correlate with kind)
    return out


SAMPLERS = {"uniform": sample_uniform, "stratified": sample_stratified}


def _sizes(inputs: tuple[tuple[int, int], ...], *strides: int) -> list[tuple[int, int]]:
    return [(h // s, w // s) for h, w in inputs for s in strides]


def default_space(inputs: tuple[tuple[int, int], ...] = ((256, 512), (512, 1024))) -> SearchSpace:
    """Every block kind the search client's supernet (search_client.models.supernet) produces, at
    the widths its channel gates can prune to and at the feature sizes of the input sizes it is
    searched (256x512) and deployed (512x1024) at."""
    ch = IntRange(lo=4, hi=256)
    return SearchSpace(
        kinds={
            "conv": [
                KindSpace(
                    fields={"cin": [3], "cout": IntRange(lo=4, hi=128), "kernel": [3], "stride": [2]},
                    sizes=_sizes(inputs, 1),
                ),
                KindSpace(
                    fields={"cin": ch, "cout": ch, "kernel": [3], "stride": [1, 2]},
                    sizes=_sizes(inputs, 2, 4, 8),
                ),
            ],
            "lir": [
                KindSpace(
                    fields={"cin": ch, "clead": ch, "cmid": IntRange(lo=4, hi=1536), "kernel": [3], "stride": [1]},
                    ties={"cout": "cin"},
                    sizes=_sizes(inputs, 8, 16, 32),
                )
            ],
            "down": [
                KindSpace(
                    fields={"cin": ch, "clead": ch, "cmid": IntRange(lo=4, hi=1024), "cout": ch},
                    sizes=_sizes(inputs, 4, 8, 16),
                )
            ],
            "mhsa": [
                KindSpace(
                    fields={
                        "cin": IntRange(lo=8, hi=256),
                        "heads": [1, 2, 4, 8],
                        "patch": [2],
                        "cmid": IntRange(lo=8, hi=1024),
                    },
                    sizes=_sizes(inputs, 8, 16),
                ),
                KindSpace(
                    fields={
                        "cin": IntRange(lo=8, hi=256),
                        "heads": [1, 2, 4, 8],
                        "patch": [1],
                        "cmid": IntRange(lo=8, hi=1024),
                    },
                    sizes=_sizes(inputs, 32),
                ),
            ],
            "stem": [
                KindSpace(
                    fields={
                        "cin": [3], "cmid": IntRange(lo=4, hi=128), "clead": IntRange(lo=4, hi=64),
                        "cout": IntRange(lo=4, hi=128),
                    },
                    sizes=_sizes(inputs, 1),
                )
            ],
            "context": [KindSpace(fields={"cin": ch}, sizes=_sizes(inputs, 32))],
            "bga": [KindSpace(fields={"cin": ch}, sizes=_sizes(inputs, 8))],
            "head": [
                KindSpace(
                    fields={"cin": ch, "cmid": IntRange(lo=4, hi=1024), "classes": [19], "scale": [s]},
                    sizes=_sizes(inputs, s),
                )
                for s in (4, 8, 16, 32)
            ],
        }
    )
