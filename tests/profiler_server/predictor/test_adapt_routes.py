"""``POST /v1/predictors`` with a ``base`` over a real uvicorn server: a predictor fitted on one
device class is adapted to a second from a few real measurements; the listing names the base; a
base that does not exist is a 404 naming it, one that cannot be adapted a 422 saying why.

Measurements: ``data/demo_blocks_host_p10.jsonl`` (the base class: onnxruntime with every graph
optimization) and ``data/demo_blocks_host_opt_off_p10.jsonl`` (the same blocks with graph
optimizations off), both measured on this project's host CPU (see test_adapt.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import torch
from predictor_data import ADMIN, P10_SHARE, RUNTIME, store_measured

from profiler_server.app import create_app
from profiler_server.db import PredictorVersion
from profiler_server.predictor.accuracy import mape
from profiler_server.predictor.fit import TrainSettings
from profiler_server.settings import Settings
from shared.config import parse_block
from testkit.live_server import ThreadedServer

AUTH = {"Authorization": f"Bearer {ADMIN}"}
DATA = Path(__file__).parent / "data"
HOST, OFF = "host/test-cpu", "host/test-cpu-opt-off"
N_OFF = 80  # the new class's few measurements


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def _store(server: ThreadedServer, device_class: str, rows: list[dict]) -> None:
    """Real p10 figures, stored as the agent stores a result (median: p10 / P10_SHARE)."""
    store_measured(server.app.state.db, device_class, RUNTIME, [parse_block(r["config"]) for r in rows],
                   [r["p10_ms"] / P10_SHARE for r in rows])


def _fit(server: ThreadedServer, http: httpx.Client, body: dict) -> dict:
    r = http.post("/v1/predictors", json={"runtime": RUNTIME, **body}, headers=AUTH)
    assert r.status_code == 202, r.text
    server.app.state.predictor.wait(r.json()["id"], timeout=300)
    row = http.get(f"/v1/predictors/{r.json()['id']}").json()
    assert row["state"] == "ready", row
    return {**row, "started": r.json()}


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """A live server holding both classes' measurements and a base fitted on the host class."""
    tmp = tmp_path_factory.mktemp("adapt")
    settings = Settings(data_dir=tmp / "data", db_url=f"sqlite:///{tmp}/farm.db", admin_token=ADMIN)

    def make_app():
        app = create_app(settings)
        app.state.predictor.settings = TrainSettings(hidden=64, max_epochs=200, patience=30, members=2)
        return app

    with ThreadedServer(make_app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        _store(server, HOST, _rows("demo_blocks_host_p10.jsonl"))
        _store(server, OFF, _rows("demo_blocks_host_opt_off_p10.jsonl")[:N_OFF])
        base = _fit(server, http, {"device_class": HOST})
        yield server, http, base


def test_an_adapted_predictor_starts_from_the_base_and_the_listing_names_it(farm):
    server, http, base = farm
    adapted = _fit(server, http, {"device_class": OFF, "base": {"device_class": HOST}})
    named = {"id": base["id"], "device_class": HOST, "runtime": RUNTIME, "version": 1}
    assert adapted["started"]["adapted_from"] == named
    listed = http.get("/v1/predictors", params={"device_class": OFF}).json()
    assert [(p["adapted_from"], p["metrics"]["adapted_from"]) for p in listed] == [(named, named)]
    assert http.get("/v1/predictors", params={"device_class": HOST}).json()[0]["adapted_from"] is None
    assert {"base_mape", "mape", "peers", "adaptation"} <= adapted["metrics"].keys()
    # the blocks the new class did not measure: the adapted version answers them closer than the base
    unseen = _rows("demo_blocks_host_opt_off_p10.jsonl")[N_OFF:]
    answers = {}
    for device_class in (HOST, OFF):
        r = http.post("/v1/predict", json={"device_class": device_class, "runtime": RUNTIME,
                                           "blocks": [row["config"] for row in unseen]})
        assert r.status_code == 200, r.text
        answers[device_class] = r.json()
    assert {dc: a["predictor"]["id"] for dc, a in answers.items()} == {HOST: base["id"], OFF: adapted["id"]}
    truth = [row["p10_ms"] for row in unseen]
    errors = {dc: mape(a["block_ms"], truth) for dc, a in answers.items()}
    assert errors[OFF] < errors[HOST], errors


@pytest.mark.parametrize("base", [{"device_class": "Pixel-9/tensor"}, {"device_class": HOST, "version": 7},
                                  {"device_class": HOST, "runtime": "tflite"}])
def test_a_base_that_does_not_exist_is_404_naming_it(farm, base):
    _, http, _ = farm
    r = http.post("/v1/predictors", json={"device_class": OFF, "runtime": RUNTIME, "base": base}, headers=AUTH)
    assert r.status_code == 404, r.text
    assert base["device_class"] in r.json()["detail"] and "does not exist" in r.json()["detail"]


def test_a_base_of_another_statistic_is_422_saying_which(farm):
    _, http, _ = farm
    r = http.post("/v1/predictors", json={"device_class": OFF, "runtime": RUNTIME, "statistic": "median_ms",
                                          "base": {"device_class": HOST}}, headers=AUTH)
    assert r.status_code == 422, r.text
    assert "learned p10_ms" in r.json()["detail"] and "median_ms" in r.json()["detail"]


def _copy_of_base(server: ThreadedServer, base_id: int, device_class: str, edit) -> None:
    """Store version 1 of ``device_class``: the base's row with ``edit`` applied to (blob payload, row)."""
    with server.app.state.db.transaction() as s:
        row = s.get(PredictorVersion, base_id)
        payload = torch.load(io.BytesIO(row.blob), weights_only=True)
        copy = PredictorVersion(device_class=device_class, runtime=row.runtime, version=1, state="ready",
                                metrics=dict(row.metrics), feature_ranges=dict(row.feature_ranges))
        edit(payload, copy)
        buf = io.BytesIO()
        torch.save(payload, buf)
        copy.blob, copy.blob_sha256 = buf.getvalue(), "x" * 64
        s.add(copy)


def test_a_base_of_another_feature_encoding_or_space_is_422_saying_why(farm):
    server, http, base = farm

    def older_encoding(payload, row):
        payload["feature_spec"] = {**payload["feature_spec"], "version": payload["feature_spec"]["version"] - 1}

    def other_kinds(payload, row):
        row.feature_ranges = {"warp": next(iter(row.feature_ranges.values()))}

    _copy_of_base(server, base["id"], "host/older-server", older_encoding)
    _copy_of_base(server, base["id"], "host/other-space", other_kinds)
    for device_class, why in (("host/older-server", "another feature encoding"), ("host/other-space", "another space")):
        r = http.post("/v1/predictors", json={"device_class": OFF, "runtime": RUNTIME,
                                              "base": {"device_class": device_class}}, headers=AUTH)
        assert r.status_code == 422, r.text
        assert device_class in r.json()["detail"] and why in r.json()["detail"], r.json()
