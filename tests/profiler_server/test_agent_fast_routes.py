"""The agents' lease and result calls are served by plain Starlette routes ahead of FastAPI's: every
answer (status and body) is the one FastAPI's route of the same path gives, for good requests and
for each way a request can be wrong."""

from __future__ import annotations

import json

from farm_helpers import Farm, bearer, small_configs, stats
from fastapi.routing import APIRoute
from starlette.routing import Route

FAST_NAMES = ("lease", "result")


def fast_routes(app) -> list:
    plain = [r for r in app.router.routes if isinstance(r, Route) and not isinstance(r, APIRoute)]
    return [r for r in plain if r.name in FAST_NAMES]


def answer(farm: Farm, method_path: str, body: bytes | None, headers: dict) -> tuple[int, object, str | None]:
    r = farm.client.post(method_path, content=body, headers=headers)
    return r.status_code, r.json(), r.headers.get("content-type")


def bad_requests(farm: Farm, job: dict) -> list[tuple[str, bytes | None, dict]]:
    good_lease = json.dumps({"agent_id": farm.agent_id, "serial": farm.serial}).encode()
    unknown_device = json.dumps({"agent_id": farm.agent_id, "serial": "dev-9"}).encode()  # 404, no lease
    result = {"lease_id": job["lease_id"], "serial": farm.serial, "stats": stats()}
    as_json = {"content-type": "application/json"}
    agent = {**farm.agent, **as_json}
    path = f"/v1/jobs/{job['job_id']}/result"
    return [
        ("/v1/jobs/lease", good_lease, {**farm.agent, "content-type": "text/plain"}),
        ("/v1/jobs/lease", good_lease, farm.agent),  # no content type
        ("/v1/jobs/lease", unknown_device, {**farm.agent, "content-type": "application/vnd.x+json"}),
        ("/v1/jobs/lease", b'{"agent_id": "a",', agent),
        ("/v1/jobs/lease", b"\xff\xfe", agent),
        ("/v1/jobs/lease", b"", agent),
        ("/v1/jobs/lease", b"[]", agent),
        ("/v1/jobs/lease", json.dumps({"agent_id": "a" * 65, "serial": ""}).encode(), agent),
        ("/v1/jobs/lease", good_lease, as_json),  # no token
        ("/v1/jobs/lease", good_lease, {"authorization": "Basic abc", **as_json}),
        ("/v1/jobs/lease", good_lease, {**farm.team, **as_json}),  # wrong role: 403
        ("/v1/jobs/lease", good_lease, {**bearer("nope"), **as_json}),
        ("/v1/jobs/lease", json.dumps({"agent_id": "0" * 32, "serial": farm.serial}).encode(), agent),
        ("/v1/jobs/0/result", b"{}", agent),
        ("/v1/jobs/abc/result", json.dumps(result).encode(), agent),
        (f"/v1/jobs/{2**62 + 1}/result", json.dumps(result).encode(), agent),
        ("/v1/jobs/999999/result", json.dumps(result).encode(), agent),  # no such job: 404
        (path, json.dumps({**result, "lease_id": "other"}).encode(), agent),  # not this lease: 409
        (path, json.dumps({**result, "stats": {**stats(), "runs": "many"}}).encode(), agent),
        (path, json.dumps({**result, "stats": []}).encode(), agent),
        (path, b'"text"', agent),
        (path, json.dumps({**result, "lease_next": True}).encode(), agent),  # no agent_id: 422
        (path, json.dumps({**result, "lease_next": 1, "agent_id": farm.agent_id}).encode(), agent),
        (path, json.dumps(result).encode(), {**farm.team, **as_json}),
    ]


def test_fast_routes_answer_every_bad_request_as_fastapis_route_does(farm: Farm):
    farm.campaign(small_configs(2))
    job = farm.lease()
    requests = bad_requests(farm, job)
    fast = [answer(farm, *request) for request in requests]
    app = farm.client.app
    removed = fast_routes(app)
    assert len(removed) == 2
    app.router.routes = [r for r in app.router.routes if r not in removed]
    slow = [answer(farm, *request) for request in requests]
    for request, f, s in zip(requests, fast, slow, strict=True):
        assert f == s, request
    assert {status for status, _, _ in fast} >= {401, 403, 404, 409, 422}


def test_lease_and_result_through_the_fast_routes_keep_the_contract(farm: Farm):
    farm.campaign(small_configs(1))
    assert len(fast_routes(farm.client.app)) == 2
    job = farm.lease()
    assert job["artifact_url"] == f"/v1/artifacts/{job['artifact_sha256']}"
    assert job["lease_expires_at"].endswith("Z")  # the same datetime form as every other answer
    first = farm.report(job)
    assert first.status_code == 200 and first.json()["next_job"] is None
    assert set(first.json()) == {"measurement_id", "next_job", "next_error"}
    again = farm.report(job)
    assert again.status_code == 409 and "not leased" in again.json()["detail"]
    assert farm.lease() is None


def test_a_result_that_asks_for_the_next_job_gets_it_in_the_same_call(farm: Farm):
    """One call per measured job: the result stores the measurement and leases the device's next
    job as a lease call would; a lease the agent may not take leaves the result stored."""
    farm.campaign(small_configs(3))
    job = farm.lease()
    seen = [job["job_id"]]
    for _ in range(2):
        r = farm.report(job, lease_next=True, agent_id=farm.agent_id)
        assert r.status_code == 200, r.text
        job = r.json()["next_job"]
        assert job is not None and job["job_id"] not in seen
        seen.append(job["job_id"])
    listed = farm.client.get(f"/v1/jobs/{job['job_id']}", headers=farm.team).json()
    assert listed["state"] == "running" and listed["leased_by_device"] == farm.serial
    last = farm.report(job, lease_next=True, agent_id=farm.agent_id)
    assert last.status_code == 200 and last.json()["next_job"] is None and last.json()["next_error"] is None
    rows = farm.client.get("/v1/measurements", params={"device_class": listed["device_class"]}, headers=farm.team)
    assert sorted(m["job_id"] for m in rows.json()) == sorted(seen)

    farm.campaign(small_configs(2, offset=10))
    job = farm.lease()
    foreign = farm.report(job, lease_next=True, agent_id="0" * 32)  # not this token's agent
    assert foreign.status_code == 200 and foreign.json()["next_job"] is None
    assert "agent" in foreign.json()["next_error"]
    assert farm.report(job).status_code == 409, "the result was stored: a second one is refused"
    assert farm.lease() is not None, "the refused next lease took nothing from the queue"
