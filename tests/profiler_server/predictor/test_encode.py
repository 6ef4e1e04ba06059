"""The batched serving encoder must give exactly the numbers of the shared per-block encoder."""

import random

import torch

from profiler_server.predictor.encode import encode_many
from shared.config import parse_block
from shared.encoding import encode_blocks


def every_kind(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c, h = rng.choice((3, 8, 17, 24, 64, 255)), rng.choice((4, 8, 12, 32, 100))
        w = rng.choice((4, 8, 16, 64))
        kind = rng.choice(("conv", "lir", "down", "mhsa", "stem", "context", "bga", "head"))
        raw = {"kind": kind, "h": h, "w": w, "cin": c}
        if kind in ("conv", "lir"):
            raw.update(cout=rng.choice((1, 9, 96)), kernel=rng.choice((1, 3, 5)), stride=rng.choice((1, 2)))
        if kind in ("lir", "down", "head"):
            raw["cmid"] = rng.choice((5, 16, 300))
        if kind == "down":
            raw["cout"] = rng.choice((7, 64))
        if kind == "mhsa":
            raw.update(cin=16, heads=rng.choice((1, 2, 4)), patch=rng.choice((1, 2, 4)), cmid=33, h=16, w=32)
        if kind == "stem":
            raw["cout"] = rng.choice((7, 16, 33))
        if kind == "bga":
            raw.update(h=4 * rng.randint(1, 20), w=4 * rng.randint(1, 20))
        if kind == "head":
            raw.update(classes=rng.choice((2, 19)), scale=rng.choice((1, 4, 8)))
        out.append(parse_block(raw))
    return out


def test_batched_encoding_is_bit_identical_to_the_shared_one():
    cfgs = every_kind(3000)
    assert {c.kind for c in cfgs} == {"conv", "lir", "down", "mhsa", "stem", "context", "bga", "head"}
    assert torch.equal(encode_many(cfgs), encode_blocks(cfgs))


def test_small_and_mixed_batches_keep_their_order():
    cfgs = every_kind(7, seed=3)
    assert torch.equal(encode_many(cfgs), encode_blocks(cfgs))
    assert torch.equal(encode_many(cfgs[:1]), encode_blocks(cfgs[:1]))
