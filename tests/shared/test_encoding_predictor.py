import pytest
import torch

from shared.config import parse_block
from shared.costs import block_fields, block_macs
from shared.encoding import FEATURE_NAMES, N_FEATURES, decode_fields, encode_block, encode_blocks, encode_soft
from shared.predictor import LatencyMLP, PredictorFormatError, dump_predictor, load_predictor

CFGS = [
    {"kind": "lir", "cin": 32, "cmid": 96, "cout": 64, "kernel": 5, "stride": 2, "h": 31, "w": 63},
    {"kind": "mhsa", "cin": 64, "heads": 4, "patch": 2, "cmid": 256, "h": 16, "w": 32},
    {"kind": "head", "cin": 16, "cmid": 32, "classes": 5, "scale": 4, "h": 10, "w": 12},
]


@pytest.mark.parametrize("raw", CFGS)
def test_encoding_round_trips_the_config(raw):
    cfg = parse_block(raw)
    decoded = decode_fields(encode_block(cfg))
    assert parse_block({k: v for k, v in decoded.items() if k in raw}) == cfg


def test_feature_order_is_documented_and_stable():
    feats = encode_blocks([parse_block(c) for c in CFGS])
    assert feats.shape == (3, N_FEATURES) == (3, len(FEATURE_NAMES))
    assert FEATURE_NAMES[:2] == ("kind=conv", "kind=lir")
    assert FEATURE_NAMES[-7:] == ("macs", "params", "activations", "align_cin", "align_cmid", "align_cout", "align_clead")
    macs_col = FEATURE_NAMES.index("macs")
    assert feats[0, macs_col].item() == pytest.approx(torch.log2(torch.tensor(1.0 + block_macs(parse_block(CFGS[0])))).item())


@pytest.mark.parametrize(("channels", "aligned"), [(31, 0), (30, 1), (36, 2), (40, 3), (32, 4), (96, 4), (1, 0)])
def test_alignment_counts_the_powers_of_two_up_to_16_that_divide_a_channel_count(channels, aligned):
    cfg = parse_block({**CFGS[0], "cin": channels, "clead": 24})
    feats = encode_block(cfg)
    assert feats[FEATURE_NAMES.index("align_cin")] == aligned
    assert [feats[FEATURE_NAMES.index(f"align_{f}")] for f in ("cmid", "cout", "clead")] == [4, 4, 3]  # 96, 64, 24
    assert encode_block(parse_block(CFGS[1]))[FEATURE_NAMES.index("align_clead")] == 0  # MHSA has no clead
    soft = encode_soft(cfg.kind, {**block_fields(cfg), "cin": torch.tensor(channels + 0.3)})  # rounds first
    assert soft[FEATURE_NAMES.index("align_cin")].item() == aligned


def test_soft_encoding_equals_plain_encoding_and_is_differentiable():
    cfg = parse_block(CFGS[0])
    values = dict(block_fields(cfg))
    cmid = torch.tensor(float(values["cmid"]), requires_grad=True)
    values["cmid"] = cmid
    soft = encode_soft(cfg.kind, values)
    assert torch.allclose(soft, torch.tensor(encode_block(cfg)), atol=1e-5)
    soft[FEATURE_NAMES.index("macs")].backward()
    assert cmid.grad is not None and cmid.grad.item() > 0


def test_predictor_save_load_gives_identical_numbers():
    torch.manual_seed(0)
    model = LatencyMLP()
    feats = encode_blocks([parse_block(c) for c in CFGS])
    model.set_normalization(feats, torch.log(torch.tensor([1.0, 2.0, 3.0])))
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 5
    loaded = load_predictor(dump_predictor(model, {"device_class": "host/x"}))
    assert loaded.meta == {"device_class": "host/x"}
    with torch.no_grad():
        assert torch.equal(loaded.model(feats), model.eval()(feats))


def test_loading_garbage_is_a_clear_error():
    with pytest.raises(PredictorFormatError, match="not a predictor file"):
        load_predictor(b"definitely not torch")


def test_a_feature_constant_in_training_does_not_blow_up_predictions():
    torch.manual_seed(0)
    x = torch.randn(64, N_FEATURES)
    x[:, 3] = 0.0  # e.g. a kind never seen in training
    model = LatencyMLP(hidden=32)
    model.set_normalization(x, torch.randn(64))
    assert float(model.x_std[3]) == 1.0
    probe = x[:4].clone()
    probe[:, 3] = 1.0  # that kind at predict time
    with torch.no_grad():
        out = model(probe)
        huge = model(torch.full((1, N_FEATURES), 1e9))
    assert torch.isfinite(out).all() and (out > 0).all()
    assert torch.isfinite(huge).all()
