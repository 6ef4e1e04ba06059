"""The queue: lease order, expiry, bounded retries, once-per-lease results, release, heartbeats."""

from __future__ import annotations

from datetime import datetime, timedelta

from farm_helpers import (
    ADMIN,
    DEVICE_CLASS,
    Farm,
    bearer,
    lease_until_empty,
    make_settings,
    register_agent,
    small_configs,
)
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from profiler_server import jobs
from profiler_server.app import create_app
from profiler_server.db import Job, Measurement, utcnow
from profiler_server.devices import reap


def _count(client, model) -> int:
    with client.app.state.db.sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(model))


def _expire(client, job_id: int) -> None:
    """Move a lease's expiry into the past (what waiting lease_s seconds would do)."""
    with client.app.state.db.transaction() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_lease_order_priority_then_fair_across_teams_then_age(farm: Farm):
    c = farm.client
    audio = bearer(c.post("/v1/teams", json={"name": "audio"}, headers=bearer(ADMIN)).json()["token"])
    v = farm.campaign(small_configs(3))  # vision: 3 old jobs
    a = farm.campaign(small_configs(2, offset=10), headers=audio)  # audio: 2 newer jobs
    urgent = farm.campaign(small_configs(1, offset=20), headers=audio, priority=5)
    order = []
    while (job := farm.lease()) is not None:
        order.append(c.get(f"/v1/jobs/{job['job_id']}", headers=farm.agent).json()["campaign_id"])
        assert farm.report(job).status_code == 200
    # priority first; then teams alternate (audio just leased, so vision goes next); age within a team
    assert order == [urgent["id"], v["id"], a["id"], v["id"], a["id"], v["id"]]


def test_lease_matches_device_class_and_returns_the_contract(farm: Farm):
    c = farm.client
    farm.campaign(small_configs(1))
    other_id = register_agent(c, farm.agent, ["phone-9"], device_class="SM-X/other")
    assert farm.lease(serial="phone-9", agent_id=other_id) is None
    job = farm.lease()
    assert job["artifact_url"] == f"/v1/artifacts/{job['artifact_sha256']}"
    assert job["format"] == "onnx" and job["settings"] == {
        "runtime": "onnxruntime",
        "threads": 1,
        "delegate": "cpu",
    }
    assert (job["warmup"], job["runs"]) == (10, 50)


def test_expired_lease_requeues_and_late_result_is_409_without_a_row(farm: Farm):
    c = farm.client
    farm.campaign(small_configs(1))
    first = farm.lease()
    _expire(c, first["job_id"])
    second = farm.lease(serial="dev-2")  # the lease expired: the same job goes to another device
    assert second["job_id"] == first["job_id"] and second["lease_id"] != first["lease_id"]
    late = farm.report(first)
    assert late.status_code == 409 and "not leased under lease" in late.json()["detail"]
    assert farm.report(second, serial="dev-2").status_code == 200
    assert farm.report(second, serial="dev-2").status_code == 409  # a result is accepted once
    assert _count(c, Measurement) == 1
    view = c.get(f"/v1/jobs/{first['job_id']}", headers=farm.team).json()
    assert view["state"] == "done" and view["attempts"] == 2 and view["measurement"]["serial"] == "dev-2"


def test_a_session_requeues_expired_leases_again_in_each_new_transaction(farm: Farm):
    """Expired leases are requeued once per transaction (a group commit leases for several agents
    in one), so a session that leases again after a commit still sees a lease that ran out since."""
    farm.campaign(small_configs(2))
    with farm.client.app.state.db.sessionmaker() as s:
        first = jobs.lease_job(s, "dev-1", DEVICE_CLASS, 60)
        s.commit()
        _expire(farm.client, first.job_id)
        again = jobs.lease_job(s, "dev-2", DEVICE_CLASS, 60)
        s.commit()
    assert again.job_id == first.job_id  # requeued, it is the oldest queued job again


def test_result_from_the_wrong_device_or_after_expiry_is_409(farm: Farm):
    farm.campaign(small_configs(1))
    job = farm.lease()
    r = farm.report(job, serial="dev-2")
    assert r.status_code == 409 and "dev-1" in r.json()["detail"]
    _expire(farm.client, job["job_id"])
    r = farm.report(job)
    assert r.status_code == 409 and "expired" in r.json()["detail"]


def test_bounded_retries_then_failed_with_the_reason(farm: Farm):
    c = farm.client
    campaign = farm.campaign(small_configs(1), max_attempts=2)
    for attempt in (1, 2):
        job = farm.lease()
        body = {
            "lease_id": job["lease_id"],
            "serial": "dev-1",
            "error": f"crash {attempt}",
            "output": "segfault",
        }
        r = c.post(f"/v1/jobs/{job['job_id']}/failure", json=body, headers=farm.agent)
        assert r.status_code == 200
    assert (
        r.json()["state"] == "failed"
        and "crash 2" in r.json()["error"]
        and "gave up after 2" in r.json()["error"]
    )
    assert farm.lease() is None
    view = c.get(f"/v1/campaigns/{campaign['id']}", headers=farm.team).json()
    assert view["failed"] == 1 and view["state"] == "done"


def test_non_retryable_failure_fails_at_once(farm: Farm):
    farm.campaign(small_configs(1))
    job = farm.lease()
    body = {"lease_id": job["lease_id"], "serial": "dev-1", "error": "unsupported op", "retry": False}
    r = farm.client.post(f"/v1/jobs/{job['job_id']}/failure", json=body, headers=farm.agent)
    assert r.json()["state"] == "failed"


def test_lease_expiring_too_often_fails_the_job(farm: Farm):
    farm.campaign(small_configs(1), max_attempts=2)
    for _ in range(2):
        job = farm.lease()
        _expire(farm.client, job["job_id"])
    assert farm.lease() is None
    view = farm.client.get(f"/v1/jobs/{job['job_id']}", headers=farm.team).json()
    assert view["state"] == "failed" and "lease expired" in view["error"]


def test_release_requeues_without_spending_an_attempt(farm: Farm):
    c = farm.client
    farm.campaign(small_configs(1))
    job = farm.lease()
    r = c.post(f"/v1/jobs/{job['job_id']}/release", json={"lease_id": job["lease_id"]}, headers=farm.agent)
    assert r.json() == {"state": "queued"}
    again = farm.lease()
    assert again["job_id"] == job["job_id"]
    assert c.get(f"/v1/jobs/{job['job_id']}", headers=farm.team).json()["attempts"] == 1


def test_heartbeat_extends_leases_and_reaper_requeues_silent_devices(tmp_path):
    settings = make_settings(tmp_path, lease_s=30, offline_after_s=0.5)
    with TestClient(create_app(settings)) as c:
        team = bearer(c.post("/v1/teams", json={"name": "t"}, headers=bearer(ADMIN)).json()["token"])
        agent = bearer(c.post("/v1/tokens", json={"role": "agent"}, headers=bearer(ADMIN)).json()["token"])
        farm = Farm(c, bearer(ADMIN), team, agent, register_agent(c, agent, ["dev-1"]))
        farm.campaign(small_configs(1))
        job = farm.lease()
        before = job["lease_expires_at"]
        r = c.post(f"/v1/agents/{farm.agent_id}/heartbeat", json={"agent_id": farm.agent_id, "serials": ["dev-1"]},
                   headers=agent)  # fmt: skip
        assert r.json() == {"ok": True}
        with c.app.state.db.sessionmaker() as s:
            assert s.get(Job, job["job_id"]).lease_expires_at > datetime.fromisoformat(before)
        with c.app.state.db.transaction() as s:  # the device falls silent
            from profiler_server.db import Device

            s.execute(update(Device).values(last_seen=utcnow() - timedelta(seconds=5)))
        reap(c.app.state.db, settings, c.app.state.completion)
        assert c.get(f"/v1/jobs/{job['job_id']}", headers=team).json()["state"] == "queued"
        devices = c.get("/v1/devices", headers=team).json()
        assert devices[0]["online"] is False
        assert farm.report(job).status_code == 409


def test_two_server_processes_on_one_sqlite_file_never_lease_a_job_twice(tmp_path):
    """Two Database objects = two connections, as two server processes would hold; SQLite's
    write lock plus the conditional UPDATE keep every lease unique."""
    import threading

    from profiler_server import jobs
    from profiler_server.db import Artifact, Database, Team, upgrade_database
    from shared.schemas import JobSettings, RuntimeSettings

    url = f"sqlite:///{tmp_path}/shared.db"
    first, second = Database(url), Database(url)
    upgrade_database(first.engine)
    rs = RuntimeSettings()
    with first.transaction() as s:
        team, artifact = Team(name="t"), Artifact(sha256="a" * 64, format="onnx", size=0, kind="conv")
        s.add_all([team, artifact])
        s.flush()
        s.add_all(
            jobs.new_job(artifact, team.id, "host/x", JobSettings(runtime=rs, warmup=1, runs=1, min_seconds=0))
            for _ in range(120)
        )
    leased: list[int] = []

    def lease_all(db: Database, serial: str) -> None:
        lease_until_empty(db, serial, lambda _db, _serial, view: leased.append(view.job_id))

    threads = [
        threading.Thread(target=lease_all, args=(db, f"s{i}")) for i, db in enumerate([first, second] * 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(leased) == list(range(1, 121))
