"""Artifact download guards, and whole-network uploads that queue a real measurement job."""

from __future__ import annotations

import torch
from farm_helpers import ADMIN, DEVICE_CLASS, Farm, bearer, make_settings, register_agent
from fastapi.testclient import TestClient

from profiler_server.app import create_app
from shared.export import export_module_onnx, sha256_bytes


def _network() -> bytes:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    return export_module_onnx(net, [torch.randn(1, 3, 16, 16)])


def _upload(client, headers, data: bytes, **form):
    files = {"file": ("net.onnx", data, "application/octet-stream")}
    return client.post(
        "/v1/networks", files=files, data={"device_class": DEVICE_CLASS, **form}, headers=headers
    )


def test_network_upload_queues_a_job_that_an_agent_measures(farm: Farm):
    data = _network()
    r = _upload(farm.client, farm.team, data, name="final-net", runtime="onnxruntime")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["artifact_sha256"] == sha256_bytes(data) and body["cached"] is False
    job = farm.lease()
    assert job["job_id"] == body["job_id"]
    assert farm.client.get(job["artifact_url"], headers=farm.agent).content == data
    farm.report(job, median=4.2)
    view = farm.client.get(f"/v1/jobs/{body['job_id']}", headers=farm.team).json()
    assert view["state"] == "done" and view["measurement"]["median_ms"] == 4.2 and view["kind"] == "network"
    again = _upload(farm.client, farm.team, data).json()
    assert again == {**body, "cached": True, "state": "done"}
    fresh = _upload(farm.client, farm.team, data, repeat="true").json()
    assert fresh["cached"] is False and fresh["job_id"] != body["job_id"]
    assert farm.lease()["job_id"] == fresh["job_id"]  # a second measurement of the same network


def test_invalid_onnx_is_400(farm: Farm):
    r = _upload(farm.client, farm.team, b"\x08\x07garbage that is not a model")
    assert r.status_code == 400 and "ONNX" in r.json()["detail"]
    assert _upload(farm.client, farm.agent, _network()).status_code == 403


def test_oversize_upload_is_413(tmp_path):
    with TestClient(create_app(make_settings(tmp_path, max_upload_bytes=1000))) as c:
        team = bearer(c.post("/v1/teams", json={"name": "t"}, headers=bearer(ADMIN)).json()["token"])
        r = _upload(c, team, _network() + b"\0" * 100_000)
        assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_oversize_json_body_is_413(tmp_path):
    with TestClient(create_app(make_settings(tmp_path, max_json_bytes=2000))) as c:
        r = c.post(
            "/v1/teams",
            content=b"{" + b" " * 5000 + b"}",
            headers={**bearer(ADMIN), "content-type": "application/json"},
        )
        assert r.status_code == 413


def test_artifact_ids_with_path_tricks_are_rejected(farm: Farm):
    for bad in ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "A" * 64, "0" * 63, "%2e%2e", "0" * 64):
        r = farm.client.get(f"/v1/artifacts/{bad}", headers=farm.agent)
        assert r.status_code in (404, 422), (bad, r.status_code)
    assert farm.client.get("/v1/artifacts/" + "0" * 64).status_code == 401


def test_agents_only_lease_for_their_own_registered_devices(farm: Farm):
    other = register_agent(farm.client, farm.agent, ["dev-3"])
    r = farm.client.post("/v1/jobs/lease", json={"agent_id": other, "serial": "dev-1"}, headers=farm.agent)
    assert r.status_code == 404 and "not registered by agent" in r.json()["detail"]
