"""Search spaces: seeded, valid, distinct configs; stratified sampling covers each kind and range."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import KINDS, parse_block
from shared.space import IntRange, KindSpace, SearchSpace, default_space, sample_stratified, sample_uniform


@pytest.mark.parametrize("sampler", [sample_uniform, sample_stratified])
def test_samples_are_seeded_valid_and_distinct(sampler):
    configs = sampler(default_space(), 300, seed=7)
    assert len(configs) == 300
    assert len({c.key() for c in configs}) == 300
    assert [c.key() for c in configs] == [c.key() for c in sampler(default_space(), 300, seed=7)]
    assert [c.key() for c in configs] != [c.key() for c in sampler(default_space(), 300, seed=8)]
    for cfg in configs:
        assert parse_block(cfg.model_dump()) == cfg  # round trips through validation


def test_default_space_covers_every_kind_at_both_input_sizes():
    configs = sample_stratified(default_space(), 800, seed=0)
    assert {c.kind for c in configs} == set(KINDS)
    stems = [c for c in configs if c.kind == "stem"]
    assert {(c.h, c.w) for c in stems} == {(256, 512), (512, 1024)}
    lir = [c for c in configs if c.kind == "lir"]
    assert all(c.cin == c.cout for c in lir)  # tie: mixed-block LIR keeps its width
    mhsa = [c for c in configs if c.kind == "mhsa"]
    assert all(c.cin % c.heads == 0 and c.h % c.patch == 0 for c in mhsa)


def test_stratified_splits_kinds_evenly_and_spans_each_range():
    space = SearchSpace(kinds={
        "context": [KindSpace(fields={"cin": IntRange(lo=1, hi=100)}, sizes=[(8, 8)])],
        "conv": [KindSpace(fields={"cin": IntRange(lo=1, hi=100), "cout": [8]}, sizes=[(8, 8)])],
    })  # fmt: skip
    configs = sample_stratified(space, 20, seed=1)
    cins = sorted(c.cin for c in configs if c.kind == "context")
    assert len(cins) == 10
    assert [(v - 1) // 10 for v in cins] == list(range(10))  # one value per decile


def test_weights_and_invalid_combinations():
    space = SearchSpace(
        kinds={
            "mhsa": [
                KindSpace(fields={"cin": [12], "heads": [5, 4], "patch": [1], "cmid": [8]}, sizes=[(4, 4)])
            ],
            "context": [KindSpace(fields={"cin": IntRange(lo=1, hi=50)}, sizes=[(4, 4)])],
        },
        weights={"context": 0.0},
    )
    configs = sample_uniform(space, 5, seed=0)
    assert [c.heads for c in configs] == [4]  # heads=5 never divides 12; only one distinct config exists


def test_bad_spaces_are_rejected_with_a_message():
    with pytest.raises(ValidationError, match="unknown block kinds"):
        SearchSpace(kinds={"warp": [KindSpace(sizes=[(8, 8)])]})
    with pytest.raises(ValidationError, match="lo"):
        IntRange(lo=5, hi=1)
    with pytest.raises(ValidationError, match="empty set"):
        KindSpace(fields={"cin": []}, sizes=[(8, 8)])
