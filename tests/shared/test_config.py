import pytest
from pydantic import ValidationError

from shared.config import parse_block, parse_blocks

GOOD_MHSA = {"kind": "mhsa", "cin": 64, "heads": 4, "patch": 2, "cmid": 128, "h": 16, "w": 16}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"kind": "conv", "cin": 0, "cout": 8, "h": 8, "w": 8}, "cin", "greater than or equal to 1"),
        ({"kind": "conv", "cin": 8, "cout": -3, "h": 8, "w": 8}, "cout", "greater than or equal to 1"),
        ({"kind": "conv", "cin": 8, "cout": 8, "h": 0, "w": 8}, "h", "greater than or equal to 1"),
        ({"kind": "conv", "cin": 8, "cout": 8, "h": 8, "w": 10**9}, "w", "less than or equal to 2048"),
        ({"kind": "conv", "cin": 8, "cout": 8, "kernel": 4, "h": 8, "w": 8}, "kernel", "1, 3, 5, 7, 9 or 11"),
        ({"kind": "lir", "cin": 8, "cmid": 8, "cout": 8, "stride": 3, "h": 8, "w": 8}, "stride", "1 or 2"),
        ({"kind": "lir", "cin": 8, "cout": 8, "h": 8, "w": 8}, "cmid", "Field required"),
        ({**GOOD_MHSA, "heads": 3}, "heads", "must divide cin"),
        ({**GOOD_MHSA, "patch": 3}, "patch", "must divide h"),
        ({"kind": "conv", "cin": 99999, "cout": 8, "h": 8, "w": 8}, "cin", "less than or equal to 4096"),
        ({"kind": "conv", "cin": "many", "cout": 8, "h": 8, "w": 8}, "cin", "valid integer"),
        ({"kind": "conv", "cin": 8, "cout": 8, "h": 8, "w": 8, "bogus": 1}, "bogus", "Extra inputs"),
        ({"kind": "bga", "cin": 8, "h": 10, "w": 8}, "bga", "divisible by 4"),
    ],
)
def test_bad_configs_are_rejected_with_a_message_naming_the_field(raw, field, words):
    with pytest.raises(ValidationError) as err:
        parse_block(raw)
    text = str(err.value)
    assert field in text and words in text


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ValidationError) as err:
        parse_block({"kind": "transformer", "cin": 8, "h": 8, "w": 8})
    assert "conv" in str(err.value) and "mhsa" in str(err.value)


def test_json_round_trip_and_key_stability():
    cfg = parse_block(GOOD_MHSA)
    again = parse_block(cfg.model_dump_json())
    assert again == cfg and again.key() == cfg.key()
    assert parse_block({**GOOD_MHSA, "cmid": 256}).key() != cfg.key()


def test_parse_blocks_accepts_mixed_kinds():
    blocks = parse_blocks([GOOD_MHSA, {"kind": "down", "cin": 8, "cmid": 16, "cout": 8, "h": 8, "w": 8}])
    assert [b.kind for b in blocks] == ["mhsa", "down"]
    assert blocks[1].out_size() == (4, 4)
