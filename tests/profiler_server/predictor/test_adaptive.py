"""Adaptive campaigns: new configs near the ones the latest predictor misses most."""

from __future__ import annotations

import numpy as np
from predictor_data import AUTH, DEVICE_CLASS, RUNTIME, store_measurements

from profiler_server.db import Campaign
from profiler_server.predictor.adaptive import near_worst
from shared.config import ConvConfig

SPACE = {"kinds": {"conv": [{"fields": {"cin": {"lo": 8, "hi": 64}, "cout": [64], "kernel": [3]},
                             "sizes": [[8, 8], [32, 32]]}]}}  # fmt: skip


def test_near_worst_takes_turns_over_the_worst_configs_nearest_first():
    candidates = np.array([[0.0, 0.0], [10.0, 10.0], [0.1, 0.0], [9.0, 9.0], [5.0, 5.0]])
    worst = np.array([[10.0, 10.0], [0.0, 0.0]])  # worst first
    assert near_worst(worst, candidates, 3) == [1, 0, 3]
    assert sorted(near_worst(worst, candidates, 99)) == [0, 1, 2, 3, 4]  # never more than there are


def test_adaptive_campaign_samples_where_the_predictor_misses(app_client, fitted):
    # five wide 32x32 convs measured after the fit, three times slower than the fitted law
    missed = [ConvConfig(cin=c, cout=64, kernel=3, h=32, w=32) for c in (57, 59, 61, 62, 63)]
    db = app_client.app.state.db
    store_measurements(db, DEVICE_CLASS, RUNTIME, missed, seed=1, slowdown=3.0)
    body = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "space": SPACE, "n": 5, "sampling": "adaptive"}
    r = app_client.post("/v1/campaigns", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["sampling"] == "adaptive" and r.json()["n"] == 5
    with db.transaction() as s:
        picked = [ConvConfig(**c) for c in s.get(Campaign, r.json()["id"]).settings["configs"]]
    assert not {c.key() for c in picked} & {c.key() for c in missed}  # new configs only
    # a uniform draw from this space lands there (32x32 and cin >= 40) with p ~ 0.23 per config
    assert all(c.h == 32 and c.cin >= 40 for c in picked), [c.model_dump() for c in picked]


def test_adaptive_campaign_without_a_predictor_is_409_saying_what_to_run(app_client):
    body = {"device_class": "host/none", "space": SPACE, "n": 5, "sampling": "adaptive"}
    r = app_client.post("/v1/campaigns", json=body, headers=AUTH)
    assert r.status_code == 409 and "run a stratified or uniform campaign first" in r.json()["detail"]
