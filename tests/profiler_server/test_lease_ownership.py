"""Leases belong to the agent that took them: only that agent's heartbeat renews them and only that
agent may release them or report them failed; per-team limits answer 429 with a message."""

from __future__ import annotations

from datetime import datetime

from farm_helpers import ADMIN, DEVICE_CLASS, Farm, bearer, make_settings, register_agent, small_configs
from fastapi.testclient import TestClient
from sqlalchemy import select

from profiler_server.app import create_app
from profiler_server.db import Job, Team
from profiler_server.predictor import store


def _expiry(farm: Farm, job_id: int) -> datetime:
    with farm.client.app.state.db.sessionmaker() as s:
        return s.get(Job, job_id).lease_expires_at


def _heartbeat(farm: Farm, agent_id: str, headers: dict, serials: list[str]) -> None:
    r = farm.client.post(f"/v1/agents/{agent_id}/heartbeat", json={"agent_id": agent_id, "serials": serials},
                         headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text


def _second_agent(farm: Farm, serials: list[str]) -> tuple[dict, str]:
    token = farm.client.post("/v1/tokens", json={"role": "agent"}, headers=farm.admin).json()["token"]
    return bearer(token), register_agent(farm.client, bearer(token), serials)


def test_heartbeat_of_a_replacement_agent_leaves_the_dead_agents_lease_to_expire(farm: Farm):
    farm.campaign(small_configs(1))
    job = farm.lease()
    first = _expiry(farm, job["job_id"])
    # the agent dies; a new one registers the same serial (as a restarted --host-device agent does)
    headers, new_id = _second_agent(farm, [farm.serial])
    _heartbeat(farm, new_id, headers, [farm.serial])
    assert _expiry(farm, job["job_id"]) == first  # not renewed by someone else's heartbeat
    _heartbeat(farm, farm.agent_id, farm.agent, [farm.serial])
    assert _expiry(farm, job["job_id"]) > first  # the holder's own heartbeat renews it


def test_only_the_holder_releases_or_fails_its_lease(farm: Farm):
    farm.campaign(small_configs(1))
    job = farm.lease()
    other_headers, _ = _second_agent(farm, ["dev-9"])
    release = {"lease_id": job["lease_id"]}
    url = f"/v1/jobs/{job['job_id']}"
    r = farm.client.post(f"{url}/release", json=release, headers=other_headers)
    assert r.status_code == 403 and "another token" in r.json()["detail"]
    failure = {"lease_id": job["lease_id"], "serial": farm.serial, "error": "x", "retry": False}
    assert farm.client.post(f"{url}/failure", json=failure, headers=other_headers).status_code == 403
    # same token, another agent id: a conflict, named in the answer
    sibling = register_agent(farm.client, farm.agent, ["dev-8"])
    r = farm.client.post(f"{url}/release", json={**release, "agent_id": sibling}, headers=farm.agent)
    assert r.status_code == 409 and farm.agent_id in r.json()["detail"]
    assert farm.client.get(url, headers=farm.team).json()["state"] == "running"
    r = farm.client.post(f"{url}/release", json={**release, "agent_id": farm.agent_id}, headers=farm.agent)
    assert r.json() == {"state": "queued"}


def test_a_re_registering_agent_keeps_its_id_and_its_leases(farm: Farm):
    farm.campaign(small_configs(1))
    job = farm.lease()
    devices = [
        {"serial": s, "device_class": DEVICE_CLASS, "kind": "host"} for s in ("dev-1", "dev-2", "dev-3")
    ]
    body = {"name": "test-agent", "devices": devices, "agent_id": farm.agent_id}
    r = farm.client.post("/v1/agents", json=body, headers=farm.agent)
    assert r.json()["agent_id"] == farm.agent_id
    release = {"lease_id": job["lease_id"], "agent_id": farm.agent_id}
    assert (
        farm.client.post(f"/v1/jobs/{job['job_id']}/release", json=release, headers=farm.agent).status_code
        == 200
    )


def test_team_limits_on_queued_jobs_and_running_fits(tmp_path):
    settings = make_settings(tmp_path, team_max_queued_jobs=5, team_max_running_fits=1)
    with TestClient(create_app(settings)) as c:
        team = bearer(c.post("/v1/teams", json={"name": "big"}, headers=bearer(ADMIN)).json()["token"])
        body = {"device_class": DEVICE_CLASS, "configs": small_configs(4)}
        assert c.post("/v1/campaigns", json=body, headers=team).status_code == 201
        r = c.post("/v1/campaigns", json={**body, "configs": small_configs(2, offset=10)}, headers=team)
        assert r.status_code == 429 and "4 jobs queued or running" in r.json()["detail"]
        other = bearer(c.post("/v1/teams", json={"name": "small"}, headers=bearer(ADMIN)).json()["token"])
        assert c.post("/v1/campaigns", json=body, headers=other).status_code == 201  # other teams unaffected
        with c.app.state.db.transaction() as s:  # one fit of this team is still running
            team_id = s.scalar(select(Team.id).where(Team.name == "big"))
            store.new_version(s, DEVICE_CLASS, "onnxruntime/t1/cpu", team_id=team_id)
        r = c.post("/v1/predictors", json={"device_class": DEVICE_CLASS}, headers=team)
        assert r.status_code == 429 and "RTSEG_TEAM_MAX_RUNNING_FITS" in r.json()["detail"]
