"""Tenancy between two teams on one live server (a real ``profiler-server`` process on loopback):
uploaded networks are readable only by their teams and by the agent measuring them; a duplicate
upload never hands out another team's job; the model format must fit the runtime; a device class
without an agent is answered with a note and the job can be cancelled; measurements need a token and
show a team the lab's block rows but only its own networks."""

from __future__ import annotations

import io

import httpx
import pandas as pd
import pytest
import torch
from farm_helpers import ADMIN, DEVICE_CLASS, LiveServer, bearer, small_configs, stats

from shared.export import export_module_onnx, sha256_bytes


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    data = tmp_path_factory.mktemp("tenancy") / "data"
    data.mkdir()
    server = LiveServer(data).start(timeout=240)  # a loaded shared CI machine starts slowly
    http = httpx.Client(base_url=server.url, timeout=60)
    admin = bearer(ADMIN)
    teams = {name: bearer(http.post("/v1/teams", json={"name": name}, headers=admin).json()["token"])
             for name in ("alpha", "beta")}  # fmt: skip
    agents = []
    for serial in ("dev-a", "dev-b"):  # two agents, each with its own token and device
        token = bearer(http.post("/v1/tokens", json={"role": "agent"}, headers=admin).json()["token"])
        body = {"name": serial, "devices": [{"serial": serial, "device_class": DEVICE_CLASS, "kind": "host"}]}
        agent_id = http.post("/v1/agents", json=body, headers=token).json()["agent_id"]
        agents.append({"headers": token, "agent_id": agent_id, "serial": serial})
    yield {"http": http, "admin": admin, **teams, "agents": agents}
    http.close()
    server.stop()


def _network(seed: int) -> bytes:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    return export_module_onnx(net, [torch.randn(1, 3, 16, 16)])


def _upload(lab, team: str, data: bytes, **form) -> httpx.Response:
    files = {"file": ("net.onnx", data, "application/octet-stream")}
    return lab["http"].post("/v1/networks", files=files, data={"device_class": DEVICE_CLASS, **form},
                            headers=lab[team])  # fmt: skip


def _lease(lab, agent: dict) -> dict | None:
    body = {"agent_id": agent["agent_id"], "serial": agent["serial"]}
    return lab["http"].post("/v1/jobs/lease", json=body, headers=agent["headers"]).json()["job"]


def _report(lab, agent: dict, job: dict, median: float) -> None:
    body = {"lease_id": job["lease_id"], "serial": agent["serial"], "stats": stats(median)}
    r = lab["http"].post(f"/v1/jobs/{job['job_id']}/result", json=body, headers=agent["headers"])
    assert r.status_code == 200, r.text


def _measure_everything(lab, agent: dict, median: float = 5.0) -> list[dict]:
    leased = []
    for _ in range(50):  # bounded: the tests queue a handful of jobs
        job = _lease(lab, agent)
        if job is None:
            return leased
        _report(lab, agent, job, median)
        leased.append(job)
    raise AssertionError("the queue did not drain")


def test_a_network_is_readable_by_its_team_and_the_agent_measuring_it_only(lab):
    http, holder, bystander = lab["http"], *lab["agents"]
    data = _network(1)
    up = _upload(lab, "alpha", data).json()
    url = f"/v1/artifacts/{up['artifact_sha256']}"
    assert http.get(url, headers=lab["alpha"]).content == data
    assert http.get(url, headers=lab["admin"]).status_code == 200
    assert http.get(url, headers=lab["beta"]).status_code == 404
    assert http.get(url, headers=holder["headers"]).status_code == 404  # no job held yet
    job = _lease(lab, holder)
    assert job["job_id"] == up["job_id"]
    assert http.get(url, headers=holder["headers"]).content == data  # while it measures it
    assert http.get(url, headers=bystander["headers"]).status_code == 404
    _report(lab, holder, job, 5.0)
    assert http.get(url, headers=holder["headers"]).status_code == 404  # done: no longer


def test_block_artifacts_stay_lab_wide(lab):
    http = lab["http"]
    body = {"device_class": DEVICE_CLASS, "configs": small_configs(1, offset=40)}
    campaign = http.post("/v1/campaigns", json=body, headers=lab["alpha"]).json()
    job = http.get("/v1/jobs", params={"campaign_id": campaign["id"]}, headers=lab["alpha"]).json()["items"][0]
    assert http.get(f"/v1/artifacts/{job['artifact_sha256']}", headers=lab["beta"]).status_code == 200
    _measure_everything(lab, lab["agents"][0])


def test_a_duplicate_upload_gets_its_own_job_never_the_other_teams(lab):
    http, agent = lab["http"], lab["agents"][0]
    data = _network(2)
    first = _upload(lab, "alpha", data).json()
    queued_twin = _upload(lab, "beta", data).json()  # alpha's job is still queued: beta's own job
    assert queued_twin["job_id"] != first["job_id"] and queued_twin["cached"] is False
    assert http.get(f"/v1/jobs/{queued_twin['job_id']}", headers=lab["beta"]).json()["state"] == "queued"
    _measure_everything(lab, agent, median=7.0)
    data3 = _network(3)
    measured = _upload(lab, "alpha", data3).json()
    _measure_everything(lab, agent, median=9.0)
    shared = _upload(lab, "beta", data3).json()  # measured by alpha: beta gets the measurement
    assert shared["job_id"] != measured["job_id"] and shared["cached"] is True and shared["state"] == "done"
    view = http.get(f"/v1/jobs/{shared['job_id']}", headers=lab["beta"]).json()
    assert view["team"] == "beta" and view["measurement"]["median_ms"] == 9.0
    assert http.get(f"/v1/jobs/{measured['job_id']}", headers=lab["beta"]).status_code == 404
    assert http.get(f"/v1/artifacts/{shared['artifact_sha256']}", headers=lab["beta"]).status_code == 200
    again = _upload(lab, "beta", data3).json()  # beta's own job from now on
    assert again["job_id"] == shared["job_id"]


def test_the_model_format_must_fit_the_runtime(lab):
    onnx_as_tflite = _upload(lab, "alpha", _network(4), runtime="tflite")
    assert onnx_as_tflite.status_code == 400 and "ONNX model" in onnx_as_tflite.json()["detail"]
    tflite_header = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64  # a TFLite flatbuffer's identifier
    tflite_as_onnx = _upload(lab, "alpha", tflite_header, runtime="onnxruntime")
    assert tflite_as_onnx.status_code == 400 and "runtime=tflite" in tflite_as_onnx.json()["detail"]
    assert _upload(lab, "alpha", b"neither", runtime="tflite").status_code == 400


def test_a_class_without_an_agent_is_answered_with_a_note_and_the_job_can_be_cancelled(lab):
    http = lab["http"]
    r = _upload(lab, "alpha", _network(5), device_class="Pixel 9/zuma")
    assert r.status_code == 201
    up = r.json()
    assert "no agent has registered" in up["waiting"] and DEVICE_CLASS in up["waiting"]
    assert f"/v1/jobs/{up['job_id']}/cancel" in up["waiting"]
    assert http.post(f"/v1/jobs/{up['job_id']}/cancel", headers=lab["beta"]).status_code == 404
    cancelled = http.post(f"/v1/jobs/{up['job_id']}/cancel", headers=lab["alpha"])
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = http.post(f"/v1/jobs/{up['job_id']}/cancel", headers=lab["alpha"])
    assert again.status_code == 409


def test_measurements_need_a_token_and_show_only_the_teams_own_networks(lab):
    http, agent = lab["http"], lab["agents"][0]
    alpha_net = _upload(lab, "alpha", _network(6)).json()
    body = {"device_class": DEVICE_CLASS, "configs": small_configs(2, offset=60)}
    http.post("/v1/campaigns", json=body, headers=lab["alpha"])
    _measure_everything(lab, agent)
    for path in ("/v1/measurements", "/v1/measurements.csv", "/v1/measurements.parquet"):
        assert http.get(path).status_code == 401
    alpha_rows = http.get("/v1/measurements", headers=lab["alpha"]).json()
    beta_rows = http.get("/v1/measurements", headers=lab["beta"]).json()
    alpha_nets = {r["artifact_sha256"] for r in alpha_rows if r["kind"] == "network"}
    beta_nets = {r["artifact_sha256"] for r in beta_rows if r["kind"] == "network"}
    assert alpha_net["artifact_sha256"] in alpha_nets and alpha_net["artifact_sha256"] not in beta_nets
    beta_jobs = {j["id"] for j in http.get("/v1/jobs", params={"kind": "network", "limit": 500},
                                         headers=lab["beta"]).json()["items"]}  # fmt: skip
    assert {r["job_id"] for r in beta_rows if r["kind"] == "network"} <= beta_jobs
    blocks = {r["id"] for r in alpha_rows if r["kind"] != "network"}
    assert blocks and blocks == {r["id"] for r in beta_rows if r["kind"] != "network"}  # lab-wide
    csv = pd.read_csv(io.StringIO(http.get("/v1/measurements.csv", headers=lab["beta"]).text))
    assert alpha_net["artifact_sha256"] not in set(csv["artifact_sha256"])
    parquet = pd.read_parquet(io.BytesIO(http.get("/v1/measurements.parquet", headers=lab["beta"]).content))
    assert len(parquet) == len(beta_rows)
    admin_nets = {r["artifact_sha256"] for r in http.get("/v1/measurements", headers=lab["admin"]).json()}
    assert alpha_net["artifact_sha256"] in admin_nets
    assert sha256_bytes(_network(6)) == alpha_net["artifact_sha256"]
