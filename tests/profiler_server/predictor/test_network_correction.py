"""The network-level correction: its fit (on exact data and on networks measured with onnxruntime
on this CPU), the fall-back to the plain sum, and ``"network": true`` over a real uvicorn server."""

from __future__ import annotations

import random

import httpx
import pytest
from predictor_data import ADMIN, DEVICE_CLASS, RUNTIME, store_measurements, synthetic_blocks, synthetic_ms
from torch import nn

from android_harness.host import HostRunner
from android_harness.runner import MeasureOptions
from profiler_server.app import create_app
from profiler_server.predictor import accuracy as M
from profiler_server.predictor.fit import TrainSettings
from profiler_server.predictor.network_fit import MIN_NETWORKS, fit_network_correction
from profiler_server.settings import Settings
from search_client.remote import ProfilerClient
from shared.blocks import example_inputs
from shared.config import ContextConfig, ConvConfig, LIRConfig
from shared.export import export_module_onnx, seeded_block
from shared.network_correction import aggregate_features
from testkit.live_server import ThreadedServer
from testkit.onnx_models import classifier_onnx

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _truth(blocks, block_truth) -> float:
    """A device whose whole networks run at 0.8 x the summed blocks plus 0.05 ms per block and 0.2 ms."""
    return 0.8 * sum(block_truth(b) for b in blocks) + 0.05 * len(blocks) + 0.2


def _chains(n: int, pool: list, seed: int, longest: int = 6) -> list[list]:
    rng = random.Random(seed)
    return [[rng.choice(pool) for _ in range(rng.randint(1, longest))] for _ in range(n)]


def test_the_fit_recovers_an_exact_affine_network_model_and_reports_held_out_figures():
    pool = synthetic_blocks(30, seed=3)
    nets = _chains(14, pool, seed=1)
    truth = {b.key(): synthetic_ms(b, random.Random(0)) for b in pool}
    features = [aggregate_features(sum(truth[b.key()] for b in net), net) for net in nets]
    measured = [_truth(net, lambda b: truth[b.key()]) for net in nets]
    c = fit_network_correction(features, measured)
    assert c.model == "affine" and c.fallback is None and c.n_networks == 14
    assert c.coef["sum_ms"] == pytest.approx(0.8, rel=1e-3) and c.coef["blocks"] == pytest.approx(0.05, rel=1e-2)
    assert c.coef["const"] == pytest.approx(0.2, rel=1e-2)
    assert c.heldout["affine"]["mape"] < 0.5 and c.heldout["affine"]["within_10"] == 1.0
    assert c.heldout["sum"]["mape"] > 5  # the plain sum misses these networks
    new = pool[:5]
    assert c.apply(sum(truth[b.key()] for b in new), new) == pytest.approx(_truth(new, lambda b: truth[b.key()]))
    assert c.scale == pytest.approx(0.8, rel=1e-3)


def test_too_few_networks_fall_back_to_the_plain_sum_and_say_so():
    pool = synthetic_blocks(10)
    nets = _chains(MIN_NETWORKS - 1, pool, seed=2)
    features = [aggregate_features(1.0 + len(n), n) for n in nets]
    c = fit_network_correction(features, [2.0 * (1.0 + len(n)) for n in nets])
    assert c.model == "sum" and c.is_plain_sum and c.coef == {}
    assert f"at least {MIN_NETWORKS}" in c.fallback and c.n_networks == MIN_NETWORKS - 1
    assert c.apply(3.5, pool[:2]) == 3.5 and c.scale == 1.0


def _measure_p10(module: nn.Module, inputs, tmp_path, name: str) -> float:
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(export_module_onnx(module.eval(), inputs))
    options = MeasureOptions(warmup=5, runs=40, min_seconds=0.05, max_attempts=1)
    return HostRunner().measure(path, options).p10_ms


def test_the_fit_on_networks_measured_with_onnxruntime_beats_the_plain_sum(tmp_path):
    """Six small blocks measured alone and twelve chains of them measured whole on this CPU: a lone
    block pays one inference call each, a chain one call in all, so the summed lone blocks miss the
    chains, and by more the more blocks they hold; the fitted correction must do better."""
    pool = [ConvConfig(cin=16, cout=16, kernel=3, h=16, w=16), ConvConfig(cin=16, cout=16, kernel=1, h=16, w=16),
            LIRConfig(cin=16, cmid=32, cout=16, kernel=3, h=16, w=16),
            LIRConfig(cin=16, cmid=64, cout=16, kernel=3, h=16, w=16), ContextConfig(cin=16, h=16, w=16),
            ConvConfig(cin=16, cout=16, kernel=5, h=16, w=16)]
    lone = {b.key(): _measure_p10(seeded_block(b), example_inputs(b), tmp_path, b.key()) for b in pool}
    nets = _chains(12, pool, seed=4, longest=8)
    measured = [_measure_p10(nn.Sequential(*[seeded_block(b) for b in net]), example_inputs(net[0]), tmp_path,
                             f"chain{i}") for i, net in enumerate(nets)]  # fmt: skip
    sums = [sum(lone[b.key()] for b in net) for net in nets]
    c = fit_network_correction([aggregate_features(s, net) for s, net in zip(sums, nets, strict=True)], measured)
    assert c.model != "sum", c.heldout
    assert c.heldout[c.model]["mape"] < c.heldout["sum"]["mape"]
    corrected = [c.apply(s, net) for s, net in zip(sums, nets, strict=True)]
    assert M.mape(corrected, measured) < M.mape(sums, measured)


@pytest.fixture
def live(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path}/farm.db", admin_token=ADMIN)

    def make_app():
        app = create_app(settings)
        app.state.predictor.settings = TrainSettings(hidden=64, max_epochs=200, patience=30)
        app.state.predictor.networks.check_s = 0.0  # read the network count on every request
        return app

    with ThreadedServer(make_app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        yield server, http


def _measure_networks_through_the_agent(http: httpx.Client, team: str, nets: list[list], pool_truth,
                                       unstable: int = 0) -> None:
    """Upload each network with its block list and report its measurement; the last ``unstable``
    ones are reported flagged unstable (and 3x slow: they must not steer the correction)."""
    agent = http.post("/v1/tokens", json={"role": "agent", "name": "a"}, headers=AUTH).json()["token"]
    agent_h = {"Authorization": f"Bearer {agent}"}
    device = {"serial": "dev-1", "device_class": DEVICE_CLASS, "kind": "host", "runtimes": ["onnxruntime"]}
    agent_id = http.post("/v1/agents", json={"name": "a", "devices": [device]}, headers=agent_h).json()["agent_id"]
    for i, net in enumerate(nets):
        blocks = "[" + ",".join(b.model_dump_json() for b in net) + "]"
        onnx = classifier_onnx([1, 3, 8, 8 + i], [1, 10])  # a distinct file per network
        r = http.post("/v1/networks", files={"file": (f"n{i}.onnx", onnx)},
                      data={"device_class": DEVICE_CLASS, "runtime": RUNTIME, "blocks": blocks},
                      headers={"Authorization": f"Bearer {team}"})
        assert r.status_code == 201, r.text
        job = http.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": "dev-1"}, headers=agent_h).json()["job"]
        flagged = i >= len(nets) - unstable
        ms = _truth(net, pool_truth) * (3 if flagged else 1)
        stats = {"median_ms": ms / 0.8, "mean_ms": ms / 0.8, "p10_ms": ms, "p90_ms": ms, "std_ms": 0.0, "runs": 1,
                 "unstable": flagged}
        r = http.post(f"/v1/jobs/{job['job_id']}/result", json={"lease_id": job["lease_id"], "serial": "dev-1",
                                                                 "stats": stats}, headers=agent_h)
        assert r.status_code == 200, r.text


def test_network_predictions_over_a_live_server_fall_back_then_correct(live, tmp_path):
    server, http = live
    pool = synthetic_blocks(160)
    store_measurements(server.app.state.db, DEVICE_CLASS, RUNTIME, pool)  # p10 = 0.8 x synthetic_ms
    fit = http.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "runtime": RUNTIME}, headers=AUTH).json()
    server.app.state.predictor.wait(fit["id"], timeout=120)
    body = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "blocks": [b.model_dump() for b in pool[:6]]}

    first = http.post("/v1/predict", json={**body, "network": True}).json()
    assert first["network_correction"]["model"] == "sum" and "at least" in first["network_correction"]["fallback"]
    assert first["network_ms"] == first["total_ms"] == pytest.approx(sum(first["block_ms"]))
    plain = http.post("/v1/predict", json=body).json()
    assert plain["network_ms"] is None and plain["total_ms"] == first["total_ms"]

    team = http.post("/v1/teams", json={"name": "seg"}, headers=AUTH).json()["token"]
    truth = {b.key(): 0.8 * synthetic_ms(b, random.Random(0)) for b in pool}  # the p10 the predictor learned
    _measure_networks_through_the_agent(http, team, _chains(19, pool[20:], seed=5), lambda b: truth[b.key()],
                                        unstable=3)

    with ProfilerClient(server.url, token=team, cache_dir=tmp_path / "cache") as client:
        answer = client.predict(DEVICE_CLASS, RUNTIME, pool[:6], network=True)
        fetched = client.fetch_predictor(DEVICE_CLASS, RUNTIME)
    c = answer.network_correction
    assert c.model != "sum" and c.n_networks == 16 and c.n_unstable == 3 and c.revision == 1, c
    assert answer.total_ms == pytest.approx(sum(answer.block_ms))  # the sum stays beside the corrected total
    expected = _truth(pool[:6], lambda b: truth[b.key()])
    assert answer.network_ms == pytest.approx(expected, rel=0.05)  # the MLP's block errors, not the network's
    assert abs(answer.total_ms / expected - 1) > 0.1  # where the plain sum misses
    assert fetched.correction == c
    listed = http.get("/v1/predictors", params={"device_class": DEVICE_CLASS}).json()[0]["metrics"]
    assert listed["network_correction"]["n_networks"] == 16  # versioned with the predictor


def test_an_upload_with_a_bad_block_list_is_a_400_naming_it(live):
    server, http = live
    team = http.post("/v1/teams", json={"name": "seg"}, headers=AUTH).json()["token"]
    bad = '[{"kind": "mhsa", "cin": 30, "heads": 4, "patch": 1, "cmid": 8, "h": 8, "w": 8}]'
    for blocks, message in ((bad, "heads"), ("not json", "JSON list"), ("[]", "non-empty")):
        r = http.post("/v1/networks", files={"file": ("n.onnx", b"x")}, headers={"Authorization": f"Bearer {team}"},
                      data={"device_class": DEVICE_CLASS, "runtime": RUNTIME, "blocks": blocks})
        assert r.status_code == 400 and message in r.json()["detail"], r.text


def test_the_correction_of_a_missing_version_is_a_404_naming_where_to_look(live):
    _, http = live
    r = http.get("/v1/predictors/999/network-correction")
    assert r.status_code == 404 and "GET /v1/predictors" in r.json()["detail"]
