"""A predictor fitted by a server with another feature encoding, over a real uvicorn server: it
cannot answer (404 saying why, not a 500), and the next start of the server fits a new version on
the stored measurements, which answers."""

from __future__ import annotations

import io

import httpx
import torch
from predictor_data import ADMIN, AUTH, DEVICE_CLASS, RUNTIME, store_measurements, synthetic_blocks

from profiler_server.app import create_app
from profiler_server.db import PredictorVersion
from profiler_server.settings import Settings
from testkit.live_server import ThreadedServer

BLOCKS = [{"kind": "conv", "cin": 16, "cout": 32, "kernel": 3, "h": 16, "w": 16}]


def _make_stale(server: ThreadedServer, predictor_id: int) -> None:
    """Rewrite the stored file as a server of the previous feature encoding wrote it."""
    with server.app.state.db.transaction() as s:
        row = s.get(PredictorVersion, predictor_id)
        payload = torch.load(io.BytesIO(row.blob), weights_only=True)
        payload["feature_spec"] = {**payload["feature_spec"], "version": payload["feature_spec"]["version"] - 1}
        buf = io.BytesIO()
        torch.save(payload, buf)
        row.blob = buf.getvalue()


def test_a_version_of_another_feature_encoding_is_404_and_the_next_start_refits_it(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path}/farm.db", admin_token=ADMIN)
    ask = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "blocks": BLOCKS}
    with ThreadedServer(lambda: create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        store_measurements(server.app.state.db, DEVICE_CLASS, RUNTIME, synthetic_blocks(120))
        r = http.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "runtime": RUNTIME,
                                              "statistic": "median_ms"}, headers=AUTH)
        assert r.status_code == 202, r.text
        first = r.json()["id"]
        server.app.state.predictor.wait(first, timeout=300)
        assert http.get(f"/v1/predictors/{first}").json()["state"] == "ready"
        _make_stale(server, first)
    with ThreadedServer(lambda: create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        listed = http.get("/v1/predictors", params={"device_class": DEVICE_CLASS}).json()
        assert [(p["version"], p["state"]) for p in listed][:1] == [(1, "ready")]
        refit = [p for p in listed if p["version"] == 2]
        assert len(refit) == 1, listed  # queued at start
        assert refit[0]["metrics"]["statistic"] == "median_ms"  # the statistic the old version learned
        pinned = http.post("/v1/predict", json={**ask, "predictor_version": 1})
        assert pinned.status_code == 404, pinned.text
        assert "another server version" in pinned.json()["detail"], pinned.json()
        server.app.state.predictor.wait(refit[0]["id"], timeout=300)
        r = http.post("/v1/predict", json=ask)
        assert r.status_code == 200, r.text
        assert r.json()["predictor"]["version"] == 2
