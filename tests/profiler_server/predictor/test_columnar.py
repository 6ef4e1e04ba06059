"""The columnar validation of large predict bodies against its reference, the pydantic models.

``parse_columns`` may only accept what ``PredictRequest`` accepts, with the same values: a fixed
corpus of bad blocks and generated bodies check it, and the common valid bodies must be accepted
(else the fast path would silently never run).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_encode import every_kind

from profiler_server.predictor.columnar import FAST_KINDS, MIRRORED_VALIDATORS, parse_columns
from profiler_server.predictor.encode import encode_columns
from shared.config import CONFIG_CLASSES, KINDS
from shared.encoding import encode_blocks
from shared.schemas import PredictRequest

ENVELOPE = {"device_class": "host/x", "runtime": "onnxruntime/t1/cpu"}
VALID = [
    {"kind": "conv", "cin": 3, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": 16, "cout": 16, "kernel": 5, "stride": 2, "h": 33, "w": 17},
    {"kind": "lir", "cin": 16, "cmid": 64, "cout": 16, "kernel": 3, "stride": 1, "h": 32, "w": 32},
    {"kind": "lir", "cin": 16, "cmid": 64, "cout": 24, "clead": 8, "definition": 2, "h": 32, "w": 32},
    {"kind": "down", "cin": 16, "cmid": 32, "cout": 32, "h": 32, "w": 32},
    {"kind": "mhsa", "cin": 32, "heads": 4, "patch": 2, "cmid": 64, "h": 16, "w": 16},
    {"kind": "stem", "cout": 16, "h": 64, "w": 64},
    {"kind": "stem", "cin": 1, "cout": 16, "cmid": 9, "h": 64, "w": 64},
    {"kind": "stem", "cout": 16, "cmid": 1, "h": 64, "w": 64},  # clead = max(1, 1 // 2)
    {"kind": "context", "cin": 64, "h": 8, "w": 8},
    {"kind": "bga", "cin": 64, "h": 32, "w": 64},
    {"kind": "head", "cin": 64, "cmid": 32, "classes": 19, "scale": 8, "h": 32, "w": 64},
    {"h": 8, "w": 8, "cin": 4, "kind": "context"},  # the tag need not come first
]
# Each is wrong in one way, or valid only through pydantic's lax coercion (then the fast path
# must step aside, not accept: the values would be the same, but it does not vouch for them).
BAD = [
    {"kind": "conv", "cin": 0, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": 3, "cout": 4097, "h": 64, "w": 64},
    {"kind": "conv", "cin": 3, "cout": 16, "h": 2049, "w": 64},
    {"kind": "conv", "cin": 3, "cout": 16, "kernel": 4, "h": 64, "w": 64},
    {"kind": "conv", "cin": 3, "cout": 16, "stride": 3, "h": 64, "w": 64},
    {"kind": "conv", "cin": 3, "cout": 16, "h": 64},
    {"kind": "conv", "cin": 3, "cout": 16, "h": 64, "w": 64, "cmid": 3},
    {"kind": "conv", "cin": 3.0, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": 3.5, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": True, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": "3", "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": None, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": 2**70, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": -3, "cout": 16, "h": 64, "w": 64},
    {"kind": "conv", "cin": [3], "cout": 16, "h": 64, "w": 64},
    {"kind": "lir", "cin": 16, "cmid": 64, "cout": 16, "definition": 1, "h": 32, "w": 32},
    {"kind": "lir", "cin": 16, "cmid": 64, "cout": 16, "clead": 0, "h": 32, "w": 32},
    {"kind": "lir", "cin": 16, "cmid": 64, "cout": 16, "clead": None, "h": 32, "w": 32},
    {"kind": "down", "cin": 16, "cmid": 32, "cout": 32, "kernel": 3, "h": 32, "w": 32},
    {"kind": "mhsa", "cin": 30, "heads": 4, "patch": 2, "cmid": 64, "h": 16, "w": 16},
    {"kind": "mhsa", "cin": 32, "heads": 4, "patch": 3, "cmid": 64, "h": 16, "w": 16},
    {"kind": "mhsa", "cin": 32, "heads": 65, "patch": 2, "cmid": 64, "h": 16, "w": 16},
    {"kind": "stem", "cout": 16, "cmid": 0, "h": 64, "w": 64},
    {"kind": "stem", "cout": 16, "cmid": None, "clead": None, "h": 64, "w": 64},
    {"kind": "bga", "cin": 64, "h": 30, "w": 64},
    {"kind": "head", "cin": 64, "cmid": 32, "classes": 1025, "h": 32, "w": 64},
    {"kind": "head", "cin": 64, "cmid": 32, "classes": 19, "scale": 0, "h": 32, "w": 64},
    {"kind": "nope", "cin": 3, "h": 8, "w": 8},
    {"cin": 3, "cout": 16, "h": 64, "w": 64},
    {"kind": None, "cin": 3, "cout": 16, "h": 64, "w": 64},
    [1, 2, 3],
    "conv",
]


def reference(raw: bytes) -> PredictRequest | None:
    try:
        return PredictRequest.model_validate_json(raw)
    except ValidationError:
        return None


def assert_same_as_reference(raw: bytes) -> bool:
    """Whatever ``parse_columns`` accepts, pydantic accepts with equal values; True when accepted."""
    fast = parse_columns(raw)
    if fast is None:
        return False
    ref = reference(raw)
    assert ref is not None, f"accepted by the columns, rejected by pydantic: {raw[:300]!r}"
    assert fast.envelope.model_dump(exclude={"blocks"}) == ref.model_dump(exclude={"blocks"})
    assert fast.n_blocks == len(ref.blocks)
    seen = np.zeros(len(ref.blocks), dtype=int)
    for group in fast.groups:
        cls = CONFIG_CLASSES[group.kind]
        for i, row in zip(group.index.tolist(), group.values.tolist(), strict=True):
            assert cls(**dict(zip(group.names, row, strict=True))) == ref.blocks[i]
            seen[i] += 1
    assert (seen == 1).all()
    return True


def body(blocks: list, **envelope) -> bytes:
    return json.dumps({**ENVELOPE, **envelope, "blocks": blocks}).encode()


def test_every_kind_is_validated_as_columns_with_the_models_values():
    assert set(FAST_KINDS) == set(KINDS)
    assert assert_same_as_reference(body(VALID))
    assert assert_same_as_reference(body(VALID * 50, predictor_version=2))
    assert assert_same_as_reference(body([c.model_dump() for c in every_kind(500)]))


@pytest.mark.parametrize("bad", BAD, ids=lambda b: json.dumps(b)[:60])
def test_a_bad_or_lax_block_leaves_the_body_to_pydantic(bad):
    raw = body([*VALID, bad])
    assert parse_columns(raw) is None
    assert_same_as_reference(raw)


@pytest.mark.parametrize("envelope", [
    {"device_class": ""}, {"runtime": "onnx"}, {"predictor_version": 0}, {"predictor_version": "2"},
    {"predictor_version": True}, {"predictor_version": 2.0}, {"colour": "red"}, {"device_class": None},
])  # fmt: skip
def test_the_fields_around_the_blocks_are_the_models_fields(envelope):
    raw = body(VALID, **envelope)
    ref = reference(raw)
    fast = parse_columns(raw)
    assert (fast is not None) == (ref is not None)  # same fields, same validators (pydantic's own)
    assert_same_as_reference(raw)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"device_class": "x", "blocks": []}',
                                 b'{"device_class": "x"}', b'{"device_class": "x", "blocks": {}}',
                                 body(VALID) + b" x", b'{"blocks": [], "blocks": []}'])  # fmt: skip
def test_malformed_bodies_are_left_to_pydantic(raw):
    assert parse_columns(raw) is None


def test_duplicate_keys_are_read_as_pydantic_reads_them():
    raw = (b'{"device_class": "a", "device_class": "b", "blocks": [{"kind": "context", "cin": 3, "cin": 5, '
           b'"h": 4, "w": 4}]}')  # fmt: skip
    assert assert_same_as_reference(raw)


def test_the_mirrored_validators_are_the_models_validators():
    """A validator added to a config class makes its kind fall back to pydantic (FAST_KINDS): this
    names the ones the columns apply, so that adding one is a conscious change here too."""
    for kind, cls in CONFIG_CLASSES.items():
        decorators = cls.__pydantic_decorators__
        assert set(decorators.field_validators) | set(decorators.model_validators) == MIRRORED_VALIDATORS[kind]


def test_encoding_the_columns_gives_the_shared_encoders_numbers():
    cfgs = every_kind(2000, seed=4)
    fast = parse_columns(body([c.model_dump() for c in cfgs]))
    features = np.zeros((len(cfgs), encode_blocks(cfgs[:1]).shape[1]), dtype=np.float32)
    for group in fast.groups:
        features[group.index] = encode_columns(group.kind, group.names, group.values)
    assert torch.equal(torch.from_numpy(features), encode_blocks(cfgs))


VALUES = st.one_of(
    st.integers(min_value=-2, max_value=70), st.sampled_from([0, 1, 2, 3, 4, 16, 64, 1024, 2048, 4096, 4097, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=99), st.booleans(), st.none(),
    st.text(max_size=3), st.sampled_from(["3", "16", "2"]),
)  # fmt: skip
FIELD_NAMES = ["cin", "cout", "cmid", "clead", "kernel", "stride", "h", "w", "heads", "patch", "classes", "scale",
               "definition", "extra"]  # fmt: skip


@st.composite
def mutated_blocks(draw) -> dict:
    """A valid block with some fields changed, added or removed."""
    block = dict(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):  # a third of them left valid
        name = draw(st.sampled_from(FIELD_NAMES + ["kind"]))
        if draw(st.booleans()) and name in block:
            del block[name]
        else:
            block[name] = draw(st.sampled_from(KINDS + ("x",))) if name == "kind" else draw(VALUES)
    return block


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_blocks(), min_size=1, max_size=3))
def test_generated_bodies_are_accepted_only_as_pydantic_accepts_them(blocks):
    assert_same_as_reference(body(blocks))


def test_a_large_batch_is_answered_as_its_blocks_one_by_one(app_client, fitted):
    """Over the app: a > 2 KB body takes the columnar path; each block's answer equals the small
    path's answer for that block alone, and a bad block gets pydantic's 422."""
    from predictor_data import DEVICE_CLASS

    blocks = [c.model_dump() for c in every_kind(120, seed=9)]
    raw = body(blocks, device_class=DEVICE_CLASS, runtime="onnxruntime")
    assert len(raw) > 2048 and parse_columns(raw) is not None
    large = app_client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"}).json()
    singles = [app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [b]}).json()
               for b in blocks]  # fmt: skip
    assert large["block_ms"] == pytest.approx([s["block_ms"][0] for s in singles], rel=1e-5)
    assert large["extrapolated"] == [s["extrapolated"][0] for s in singles]
    assert large["total_ms"] == pytest.approx(sum(large["block_ms"]), rel=1e-12)
    again = app_client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"}).json()
    assert again == large  # answered from the remembered blocks


@pytest.mark.parametrize("bad", [
    {"kind": "conv", "cin": 3, "cout": 16, "h": 4.5, "w": 8},  # refused while decoding
    {"kind": "mhsa", "cin": 30, "heads": 4, "patch": 2, "cmid": 64, "h": 16, "w": 16},  # by a validator
])  # fmt: skip
def test_a_large_batch_with_a_bad_block_gets_the_models_422_before_any_404(app_client, fitted, bad):
    from predictor_data import DEVICE_CLASS

    blocks = [c.model_dump() for c in every_kind(60, seed=9)]
    for device_class in (DEVICE_CLASS, "host/none-such"):
        app_client.post("/v1/predict", json={"device_class": device_class, "blocks": blocks})  # remembered
        big = app_client.post("/v1/predict", json={"device_class": device_class, "blocks": [*blocks, bad]})
        small = app_client.post("/v1/predict", json={"device_class": device_class, "blocks": [bad]})
        assert big.status_code == small.status_code == 422
        assert [e["msg"] for e in big.json()["detail"]] == [e["msg"] for e in small.json()["detail"]]
        assert big.json()["detail"][0]["loc"][:3] == ["body", "blocks", len(blocks)]
    unknown = app_client.post("/v1/predict", json={"device_class": "host/none-such", "blocks": blocks})
    assert unknown.status_code == 404 and DEVICE_CLASS in unknown.json()["detail"]
