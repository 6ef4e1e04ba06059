"""Every write needs a token of the right role: 401 without/with an unknown one, 403 for the wrong role."""

from __future__ import annotations

from farm_helpers import ADMIN, DEVICE_CLASS, bearer, small_configs


def test_missing_and_unknown_tokens_are_401_with_a_message(client):
    r = client.post("/v1/teams", json={"name": "x"})
    assert r.status_code == 401 and "bearer token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post("/v1/teams", json={"name": "x"}, headers=bearer("nope"))
    assert r.status_code == 401 and "unknown" in r.json()["detail"]
    r = client.post("/v1/teams", json={"name": "x"}, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_roles_are_enforced(farm):
    c = farm.client
    r = c.post("/v1/teams", json={"name": "other"}, headers=farm.team)
    assert r.status_code == 403 and "needs role admin" in r.json()["detail"]
    r = c.post(
        "/v1/campaigns", json={"device_class": DEVICE_CLASS, "configs": small_configs(1)}, headers=farm.agent
    )
    assert r.status_code == 403 and "team" in r.json()["detail"]
    r = c.post("/v1/jobs/lease", json={"agent_id": farm.agent_id, "serial": "dev-1"}, headers=farm.team)
    assert r.status_code == 403 and "agent" in r.json()["detail"]
    r = c.post("/v1/agents", json={"name": "x", "devices": []}, headers=farm.team)
    assert r.status_code == 403


def test_campaigns_belong_to_their_team_but_measurements_are_lab_wide(farm):
    c = farm.client
    campaign = farm.campaign(small_configs(1))
    other = c.post("/v1/teams", json={"name": "audio"}, headers=bearer(ADMIN)).json()["token"]
    assert c.get(f"/v1/campaigns/{campaign['id']}", headers=bearer(other)).status_code == 404
    assert c.get(f"/v1/campaigns/{campaign['id']}", headers=farm.team).status_code == 200
    assert c.get(f"/v1/campaigns/{campaign['id']}", headers=bearer(ADMIN)).status_code == 200
    job = farm.lease()
    assert farm.report(job).status_code == 200
    rows = c.get("/v1/measurements", params={"campaign_id": campaign["id"]}, headers=bearer(other)).json()
    assert [r["median_ms"] for r in rows] == [1.0]  # block measurements: any team
    assert c.get("/v1/measurements").status_code == 401


def test_an_agent_cannot_use_another_agents_id(farm):
    c = farm.client
    other = c.post("/v1/tokens", json={"role": "agent"}, headers=bearer(ADMIN)).json()["token"]
    r = c.post("/v1/jobs/lease", json={"agent_id": farm.agent_id, "serial": "dev-1"}, headers=bearer(other))
    assert r.status_code == 409 and "another token" in r.json()["detail"]


def test_team_token_needs_existing_team(client):
    r = client.post("/v1/tokens", json={"role": "team", "team_id": 99}, headers=bearer(ADMIN))
    assert r.status_code == 404


def test_generated_admin_token_is_written_once_with_mode_0600(tmp_path):
    from profiler_server.app import create_app
    from profiler_server.settings import Settings

    app = create_app(Settings(data_dir=tmp_path))
    token = app.state.generated_admin_token
    path = tmp_path / "admin_token"
    assert token and path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600
    again = create_app(Settings(data_dir=tmp_path))
    assert again.state.generated_admin_token is None  # not regenerated on restart
    from fastapi.testclient import TestClient

    with TestClient(again) as c:
        assert c.post("/v1/teams", json={"name": "t"}, headers=bearer(token)).status_code == 201
