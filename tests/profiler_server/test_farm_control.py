"""Listings (filters, paging), campaign and job cancel, device detail, status, token listing and
revocation, priority bounded by role: against the app on a real SQLite file, and revocation across
two real server processes sharing one database."""

from __future__ import annotations

import httpx
from farm_helpers import ADMIN, DEVICE_CLASS, LiveServer, bearer, small_configs, stats

from testkit.live_server import free_port


def _team(farm, name: str) -> dict:
    r = farm.client.post("/v1/teams", json={"name": name}, headers=farm.admin)
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])


def test_campaign_listing_filters_pages_and_hides_other_teams(farm):
    other = _team(farm, "other")
    mine = [farm.campaign(small_configs(1, offset=i)) for i in range(3)]
    theirs = farm.campaign(small_configs(1, offset=10), headers=other)
    page = farm.client.get("/v1/campaigns", params={"limit": 2}, headers=farm.team).json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [c["id"] for c in page["items"]] == [mine[2]["id"], mine[1]["id"]]  # newest first
    assert {c["team"] for c in page["items"]} == {"vision"}
    rest = farm.client.get("/v1/campaigns", params={"limit": 2, "offset": 2}, headers=farm.team).json()
    assert [c["id"] for c in rest["items"]] == [mine[0]["id"]]
    everything = farm.client.get("/v1/campaigns", headers=farm.admin).json()
    assert everything["total"] == 4
    only_other = farm.client.get("/v1/campaigns", params={"team": "other"}, headers=farm.admin).json()
    assert [c["id"] for c in only_other["items"]] == [theirs["id"]]
    r = farm.client.get("/v1/campaigns", params={"team": "other"}, headers=farm.team)
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert farm.client.get("/v1/campaigns", params={"state": "bogus"}, headers=farm.team).status_code == 422
    assert farm.client.get("/v1/campaigns", headers=farm.agent).status_code == 403


def test_job_listing_filters_by_campaign_and_state(farm):
    first = farm.campaign(small_configs(3))
    farm.campaign(small_configs(2, offset=5))
    job = farm.lease()
    assert farm.report(job, median=2.0).status_code == 200
    listed = farm.client.get("/v1/jobs", params={"campaign_id": first["id"]}, headers=farm.team).json()
    assert listed["total"] == 3 and all(j["campaign_id"] == first["id"] for j in listed["items"])
    done = farm.client.get("/v1/jobs", params={"state": "done"}, headers=farm.team).json()
    assert [j["id"] for j in done["items"]] == [job["job_id"]]
    assert done["items"][0]["measurement"]["median_ms"] == 2.0
    single = farm.client.get(f"/v1/jobs/{job['job_id']}", headers=farm.team).json()
    assert single == done["items"][0]  # a listing item is the single job's view
    other = _team(farm, "other")
    assert farm.client.get("/v1/jobs", headers=other).json()["total"] == 0


def test_cancel_takes_queued_jobs_off_the_queue_and_lets_running_ones_finish(farm):
    campaign = farm.campaign(small_configs(3))
    running = farm.lease()
    r = farm.client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=farm.team)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["state"] == "cancelled" and view["cancelled"] == 2 and view["running"] == 1
    assert farm.lease(serial="dev-2") is None  # nothing left in the queue
    assert farm.report(running, median=3.0).status_code == 200  # the running one finishes, kept
    after = farm.client.get(f"/v1/campaigns/{campaign['id']}", headers=farm.team).json()
    assert after["state"] == "cancelled" and after["done"] == 1
    again = farm.client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=farm.team)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert farm.client.post("/v1/campaigns/999/cancel", headers=farm.team).status_code == 404


def test_cancel_is_for_the_owner_and_the_admin_only(farm):
    campaign = farm.campaign(small_configs(2))
    other = _team(farm, "other")
    assert farm.client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=other).status_code == 404
    assert farm.client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=farm.agent).status_code == 403
    r = farm.client.post(f"/v1/campaigns/{campaign['id']}/cancel", headers=farm.admin)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_a_cancelled_campaign_hands_shared_jobs_to_the_campaign_still_waiting(farm):
    """Another team's campaign took the same configs from the cache: cancelling the first must
    not leave the second waiting forever or finished without measurements."""
    other = _team(farm, "other")
    first = farm.campaign(small_configs(2))
    second = farm.campaign(small_configs(2), headers=other)
    assert second["cached"] == 2 and second["state"] == "running"
    farm.client.post(f"/v1/campaigns/{first['id']}/cancel", headers=farm.team)
    for _ in range(2):
        job = farm.lease()
        assert job is not None
        assert farm.report(job).status_code == 200
    done = farm.client.get(f"/v1/campaigns/{second['id']}", headers=other).json()
    assert done["state"] == "done" and done["done"] == 2


def test_device_detail_has_temperature_current_job_and_today(farm):
    farm.campaign(small_configs(2))
    job = farm.lease()
    body = {"lease_id": job["lease_id"], "serial": "dev-1", "stats": {**stats(1.5), "temp_after_c": 41.5}}
    assert farm.client.post(f"/v1/jobs/{job['job_id']}/result", json=body, headers=farm.agent).status_code == 200
    busy = farm.lease()
    device = farm.client.get("/v1/devices/dev-1", headers=farm.team).json()
    assert device["temperature_c"] == 41.5 and device["measured_today"] == 1
    assert device["current_job"]["id"] == busy["job_id"] and device["device_class"] == DEVICE_CLASS
    other = _team(farm, "other")
    hidden = farm.client.get("/v1/devices/dev-1", headers=other).json()["current_job"]
    assert hidden["id"] == busy["job_id"] and "artifact_sha256" not in hidden
    idle = farm.client.get("/v1/devices/dev-2", headers=farm.team).json()
    assert idle["current_job"] is None and idle["temperature_c"] is None and idle["measured_today"] == 0
    listed = {d["serial"]: d for d in farm.client.get("/v1/devices", headers=farm.team).json()}
    assert listed["dev-1"]["temperature_c"] == 41.5
    assert farm.client.get("/v1/devices/nope", headers=farm.team).status_code == 404


def test_status_counts_queue_running_pace_and_failures(farm):
    farm.campaign(small_configs(4))
    done = farm.lease()
    farm.report(done)
    failing = farm.lease()
    failure = {"lease_id": failing["lease_id"], "serial": "dev-1", "error": "bad model", "retry": False}
    assert farm.client.post(f"/v1/jobs/{failing['job_id']}/failure", json=failure, headers=farm.agent).status_code == 200
    farm.lease(serial="dev-2")
    status = farm.client.get("/v1/status", headers=farm.agent).json()
    assert status == {"devices_online": 2, "queue_depth": 1, "running": 1, "jobs_per_minute": 0.1,
                      "failures_last_hour": 1, "predictors": 0}  # fmt: skip
    assert farm.client.get("/v1/status").status_code == 401


def test_token_listing_never_shows_secrets_and_follows_the_team(farm):
    listed = farm.client.get("/v1/tokens", headers=farm.admin).json()["items"]
    assert {t["role"] for t in listed} == {"admin", "team", "agent"}
    assert all(set(t) == {"id", "team", "role", "name", "created_at", "last_used_at", "revoked_at"} for t in listed)
    own = farm.client.get("/v1/tokens", headers=farm.team).json()["items"]
    assert [(t["role"], t["team"]) for t in own] == [("team", "vision")]
    assert own[0]["last_used_at"] is not None  # this very request used it
    assert farm.client.get("/v1/tokens", headers=farm.agent).status_code == 403


def test_a_revoked_token_is_refused_at_once_and_others_cannot_revoke_it(farm):
    other = _team(farm, "other")
    team_token = next(t for t in farm.client.get("/v1/tokens", headers=farm.team).json()["items"])
    assert farm.client.delete(f"/v1/tokens/{team_token['id']}", headers=other).status_code == 404
    assert farm.client.get("/v1/campaigns", headers=farm.team).status_code == 200  # warms the cache
    r = farm.client.delete(f"/v1/tokens/{team_token['id']}", headers=farm.admin)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    refused = farm.client.get("/v1/campaigns", headers=farm.team)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    admin_id = next(t["id"] for t in farm.client.get("/v1/tokens", headers=farm.admin).json()["items"]
                    if t["role"] == "admin")  # fmt: skip
    last = farm.client.delete(f"/v1/tokens/{admin_id}", headers=farm.admin)
    assert last.status_code == 409 and "last active admin" in last.json()["detail"]


def test_priority_is_bounded_by_role(farm):
    body = {"device_class": DEVICE_CLASS, "configs": small_configs(1)}
    r = farm.client.post("/v1/campaigns", json={**body, "priority": 500}, headers=farm.team)
    assert r.status_code == 403 and "100" in r.json()["detail"]
    assert farm.client.post("/v1/campaigns", json={**body, "priority": 100}, headers=farm.team).status_code == 201
    assert farm.client.post("/v1/campaigns", json={**body, "priority": 500}, headers=farm.admin).status_code == 201
    assert farm.client.post("/v1/campaigns", json={**body, "priority": 5000}, headers=farm.admin).status_code == 422


def test_revocation_reaches_every_server_process_at_once(tmp_path):
    """Two server processes on one database: a token revoked through one is refused by the other
    on the very next request (no cache keeps it alive)."""
    data = tmp_path / "data"
    data.mkdir()
    first = LiveServer(data).start()
    second = LiveServer(data, port=free_port()).start()
    try:
        admin = bearer(ADMIN)
        token = httpx.post(f"{first.url}/v1/teams", json={"name": "t"}, headers=admin).json()["token"]
        for server in (first, second):  # both processes have the token in their caches now
            assert httpx.get(f"{server.url}/v1/campaigns", headers=bearer(token)).status_code == 200
        token_id = next(t["id"] for t in httpx.get(f"{first.url}/v1/tokens", headers=admin).json()["items"]
                        if t["team"] == "t")  # fmt: skip
        assert httpx.delete(f"{first.url}/v1/tokens/{token_id}", headers=admin).status_code == 200
        assert httpx.get(f"{second.url}/v1/campaigns", headers=bearer(token)).status_code == 401
        assert httpx.get(f"{first.url}/v1/campaigns", headers=bearer(token)).status_code == 401
    finally:
        first.stop()
        second.stop()
