"""Fitting the latency MLP: it can overfit a small set, splits are stable, peers are judged."""

import random

import numpy as np
import pytest

from profiler_server.predictor.accuracy import mape
from profiler_server.predictor.fit import (
    NotEnoughData,
    TrainSettings,
    fit_predictor,
    prepare_dataset,
    split_by_key,
    train_mlp,
)
from profiler_server.predictor.peers import PEERS, evaluate_peers
from shared.config import ConvConfig, LIRConfig
from shared.costs import block_macs
from shared.encoding import encode_blocks


def synthetic_configs(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = {}
    for _ in range(50 * n):  # the space holds ~2,000 distinct configs
        if len(out) == n:
            break
        c = rng.choice((8, 16, 24, 32, 48, 64))
        h = rng.choice((8, 12, 16, 24, 32))
        if rng.random() < 0.5:
            cfg = ConvConfig(cin=c, cout=rng.choice((8, 16, 32, 64)), kernel=rng.choice((1, 3)), stride=1, h=h, w=h)
        else:
            cfg = LIRConfig(cin=c, cmid=c * rng.choice((2, 3, 4, 6)), cout=rng.choice((c, 32)), kernel=3, stride=rng.choice((1, 2)), h=h, w=h)
        out[cfg.key()] = cfg
    assert len(out) == n, f"only {len(out)} distinct synthetic configs"
    return list(out.values())


def synthetic_latency(cfg, rng: random.Random) -> float:
    """Smooth in MACs, a per-kind overhead, 1 % noise."""
    overhead = 0.02 if cfg.kind == "conv" else 0.05
    return (overhead + block_macs(cfg) / 5e7) * (1 + rng.gauss(0, 0.01))


def test_mlp_overfits_32_points():
    cfgs = synthetic_configs(32)
    rng = random.Random(1)
    y = np.array([synthetic_latency(c, rng) for c in cfgs])
    x = encode_blocks(cfgs)
    settings = TrainSettings(hidden=64, lr=5e-3, batch_size=32, max_epochs=500, patience=500)
    model, _ = train_mlp(x, y, x, y, seed=0, settings=settings)
    train_mape = mape(model(x).detach().double().numpy(), y)
    assert train_mape < 2.0, f"train MAPE {train_mape:.2f} % on 32 points"


def test_split_is_by_config_hash_and_stable():
    keys = [c.key() for c in synthetic_configs(200)]
    a = split_by_key(keys, seed=0)
    b = split_by_key(list(reversed(keys)), seed=0)
    assert {keys[i] for i in a.test} == {list(reversed(keys))[i] for i in b.test}
    assert not set(a.test) & set(a.train) and not set(a.val) & set(a.train)
    assert 10 < len(a.test) < 50


def test_fit_generalizes_on_smooth_data_and_judges_peers():
    cfgs = synthetic_configs(300)
    rng = random.Random(2)
    y = [synthetic_latency(c, rng) for c in cfgs]
    settings = TrainSettings(hidden=64, max_epochs=300, patience=40)
    result = fit_predictor(cfgs + cfgs[:10], y + y[:10], seed=0, settings=settings)
    m = result.metrics
    assert m["n_train"] + m["n_val"] + m["n_test"] == 300  # the 10 repeats are merged, not duplicated
    assert m["noise_floor"]["n_repeated"] == 10
    assert m["mape"] < 10.0
    assert set(m["peers"]) == set(PEERS)
    assert result.feature_ranges.keys() == {"conv", "lir"}


def test_peers_lookup_table_is_exact_on_training_points():
    cfgs = synthetic_configs(60)
    rng = random.Random(3)
    y = [synthetic_latency(c, rng) for c in cfgs]
    result = fit_predictor(cfgs, y, seed=0, settings=TrainSettings(hidden=16, max_epochs=5), with_peers=False)
    split = result.split
    split.test = split.train  # judge each peer on the points it was fitted on
    assert evaluate_peers(result.data, split)["lookup_table"]["mape"] == pytest.approx(0.0, abs=1e-9)


def test_too_few_configs_is_a_clear_error():
    cfgs = synthetic_configs(5)
    with pytest.raises(NotEnoughData, match="need at least"):
        fit_predictor(cfgs, [1.0] * 5)


def test_a_config_measured_in_several_sessions_is_labelled_with_its_least_disturbed_one():
    cfgs = synthetic_configs(3)
    data = prepare_dataset(cfgs + cfgs[:1], [1.0, 2.0, 3.0, 1.3])  # the first config again, 30 % slower
    assert data.y_ms[data.keys.index(cfgs[0].key())] == 1.0
    again = prepare_dataset(cfgs[:1] * 2 + cfgs[1:], [1.3, 1.0, 2.0, 3.0])  # order does not matter
    assert again.y_ms[again.keys.index(cfgs[0].key())] == 1.0
    assert data.noise["n_repeated"] == 1


def test_cost_shaped_output_starts_at_the_per_kind_cost_fit_and_saves_round_trip():
    """Latency a power law of MACs with its own exponent per kind: the cost-shaped start (per-kind
    affine on log costs) is already right before any epoch, and a saved file rebuilds the same module."""
    from shared.predictor import dump_predictor, load_predictor

    cfgs = synthetic_configs(120)
    y = np.array([(0.3 if c.kind == "conv" else 0.1) * (block_macs(c) / 1e6) ** (0.9 if c.kind == "conv" else 0.6)
                  for c in cfgs])
    x = encode_blocks(cfgs)
    settings = TrainSettings(hidden=32, max_epochs=1, patience=1)
    shaped, _ = train_mlp(x, y, x, y, seed=0, settings=settings)
    plain, _ = train_mlp(x, y, x, y, seed=0, settings=TrainSettings(hidden=32, max_epochs=1, patience=1,
                                                                       cost_affine=False))
    shaped_mape = mape(shaped(x).detach().double().numpy(), y)
    assert shaped_mape < 3.0
    assert shaped_mape < mape(plain(x).detach().double().numpy(), y) / 5
    again = load_predictor(dump_predictor(shaped)).model
    assert again.cost_affine
    assert np.allclose(again(x).detach().numpy(), shaped(x).detach().numpy())


def test_a_predictor_file_of_format_1_still_loads():
    import io

    import torch

    from shared.predictor import LatencyMLP, dump_predictor, load_predictor

    model = LatencyMLP(hidden=16)
    payload = torch.load(io.BytesIO(dump_predictor(model)), weights_only=True)
    payload["format_version"] = 1
    del payload["arch"]["cost_affine"]
    buf = io.BytesIO()
    torch.save(payload, buf)
    assert not load_predictor(buf.getvalue()).model.cost_affine


def test_the_ranking_names_the_winner_and_every_peer_that_beats_the_mlp():
    from profiler_server.predictor.fit import ranking
    from search_client.pipeline.context import beaten_warning

    peers = {"random_forest": {"mape": 29.0}, "lookup_table": {"mape": 32.9}, "linear_macs": {"mape": 50.0}}
    lost = ranking(35.4, peers)
    assert lost == {"winner": "random_forest", "beaten_by": ["random_forest", "lookup_table"]}
    line = beaten_warning({"mape": 35.4, "peers": peers, **lost})
    assert "35.4 %" in line and "random_forest 29.0 %" in line and "lookup_table 32.9 %" in line
    won = ranking(12.0, peers)
    assert won == {"winner": "mlp", "beaten_by": []} and beaten_warning({"mape": 12.0, **won}) is None
