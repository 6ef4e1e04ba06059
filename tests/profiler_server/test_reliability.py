"""Reliability against a real ``profiler-server`` process on loopback with a file SQLite database:
an agent killed mid-job, the server killed mid-campaign, eight agents racing for one queue."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from farm_helpers import ADMIN, DEVICE_CLASS, LiveServer, bearer, small_configs, stats

pytestmark = pytest.mark.slow


class Agent:
    """A minimal protocol client (the real one is android_harness's phone-agent)."""

    def __init__(self, url: str, serial: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        token = self.http.post("/v1/tokens", json={"role": "agent"}, headers=bearer(ADMIN)).json()["token"]
        self.http.headers.update(bearer(token))
        self.serial = serial
        devices = [{"serial": serial, "device_class": DEVICE_CLASS, "kind": "host"}]
        self.id = self.http.post("/v1/agents", json={"name": serial, "devices": devices}).json()["agent_id"]

    def lease(self) -> dict | None:
        r = self.http.post("/v1/jobs/lease", json={"agent_id": self.id, "serial": self.serial})
        r.raise_for_status()
        return r.json()["job"]

    def report(self, job: dict, median: float = 1.0) -> httpx.Response:
        body = {"lease_id": job["lease_id"], "serial": self.serial, "stats": stats(median)}
        return self.http.post(f"/v1/jobs/{job['job_id']}/result", json=body)


def _team(url: str) -> httpx.Client:
    token = httpx.post(f"{url}/v1/teams", json={"name": "rel"}, headers=bearer(ADMIN)).json()["token"]
    return httpx.Client(base_url=url, headers=bearer(token), timeout=120)


def _campaign(team: httpx.Client, n: int, **extra) -> dict:
    r = team.post("/v1/campaigns", json={"device_class": DEVICE_CLASS, "configs": small_configs(n), **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _drain(agent: Agent, team: httpx.Client, campaign_id: int, timeout: float = 120) -> int:
    """Lease and report until the campaign is done; returns how many results were accepted."""
    accepted, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = agent.lease()
        if job is None:
            if team.get(f"/v1/campaigns/{campaign_id}").json()["state"] == "done":
                return accepted
            time.sleep(0.1)
            continue
        accepted += agent.report(job).status_code == 200
    raise TimeoutError("campaign did not finish")


def _rows_per_job(url: str, campaign_id: int) -> Counter:
    rows = httpx.get(f"{url}/v1/measurements", params={"campaign_id": campaign_id, "samples": False}, headers=bearer(ADMIN)).json()
    return Counter(r["job_id"] for r in rows)


KILLED_AGENT = textwrap.dedent("""
    import sys, time, httpx
    url, token, agent_id = sys.argv[1:4]
    job = httpx.post(url + "/v1/jobs/lease", json={"agent_id": agent_id, "serial": "doomed"},
                     headers={"Authorization": "Bearer " + token}).json()["job"]
    print(job["job_id"], job["lease_id"], flush=True)
    time.sleep(600)  # "measuring" until killed
""")


def test_agent_killed_mid_job_is_measured_by_another_exactly_once(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    server = LiveServer(data, env={"RTSEG_LEASE_S": "1.5"}).start()
    try:
        team = _team(server.url)
        campaign = _campaign(team, 1)
        http = httpx.Client(base_url=server.url, timeout=30)
        token = http.post("/v1/tokens", json={"role": "agent"}, headers=bearer(ADMIN)).json()["token"]
        devices = [{"serial": "doomed", "device_class": DEVICE_CLASS, "kind": "host"}]
        agent_id = http.post(
            "/v1/agents", json={"name": "doomed", "devices": devices}, headers=bearer(token)
        ).json()
        proc = subprocess.Popen([sys.executable, "-c", KILLED_AGENT, server.url, token, agent_id["agent_id"]],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        job_id, lease_id = proc.stdout.readline().split()
        proc.kill()
        proc.wait()
        survivor = Agent(server.url, "survivor")
        assert survivor.lease() is None  # still leased to the dead agent
        assert _drain(survivor, team, campaign["id"], timeout=30) == 1
        late = {"lease_id": lease_id, "serial": "doomed", "stats": stats()}
        r = http.post(f"/v1/jobs/{job_id}/result", json=late, headers=bearer(token))
        assert r.status_code == 409
        assert _rows_per_job(server.url, campaign["id"]) == Counter({int(job_id): 1})
    finally:
        server.stop()


def test_server_killed_mid_campaign_loses_nothing(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    env = {"RTSEG_LEASE_S": "2"}
    server = LiveServer(data, env=env).start()
    team = _team(server.url)
    campaign = _campaign(team, 20, wait_s=0)  # answered while the export is still running
    agent = Agent(server.url, "a1")
    reported = []
    while len(reported) < 5:
        job = agent.lease()
        if job is not None:
            assert agent.report(job).status_code == 200
            reported.append(job["job_id"])
    in_flight = agent.lease()  # leased, never reported: must come back after the restart
    server.kill()
    server = LiveServer(data, port=server.port, env=env).start()
    try:
        assert _drain(agent, team, campaign["id"]) >= 20 - 5
        view = team.get(f"/v1/campaigns/{campaign['id']}").json()
        assert (view["state"], view["done"], view["failed"], view["jobs"]) == ("done", 20, 0, 20)
        rows = _rows_per_job(server.url, campaign["id"])
        assert len(rows) == 20 and set(rows.values()) == {1}
        assert set(reported) <= set(rows) and in_flight["job_id"] in rows
    finally:
        server.stop()


def test_eight_concurrent_agents_measure_every_job_exactly_once(live_server: LiveServer):
    team = _team(live_server.url)
    campaign = _campaign(team, 300, wait_s=60)
    deadline = time.monotonic() + 240
    while campaign["state"] == "exporting" and time.monotonic() < deadline:  # export runs in the background
        time.sleep(0.5)
        campaign = team.get(f"/v1/campaigns/{campaign['id']}").json()
    assert campaign["jobs"] == 300
    agents = [Agent(live_server.url, f"dev-{i}") for i in range(8)]
    accepted: list[int] = []
    errors: list[str] = []

    def work(agent: Agent) -> None:
        try:
            accepted.append(_drain(agent, team, campaign["id"], timeout=120))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(accepted) == 300 and all(n > 0 for n in accepted)
    rows = _rows_per_job(live_server.url, campaign["id"])
    assert len(rows) == 300 and set(rows.values()) == {1}
    serials = Counter(r["serial"] for r in httpx.get(f"{live_server.url}/v1/measurements", headers=bearer(ADMIN)).json())
    assert len(serials) == 8
    for a in agents:
        a.http.close()


def test_sigterm_stops_a_long_export_which_resumes_after_restart(tmp_path: Path):
    """SIGTERM waits for the config in hand, not the whole export; the next start exports the rest
    and every config gets its job (none lost, none twice)."""
    data = tmp_path / "data"
    data.mkdir()
    server = LiveServer(data).start(timeout=240)  # generous: the start imports torch
    team = _team(server.url)
    n = 400  # 0.02 s (quiet) to 0.3 s (busy 2-core machine) per config: never done in a blink
    campaign = _campaign(team, n, wait_s=0)
    assert campaign["state"] == "exporting"
    deadline = time.monotonic() + 60  # SIGTERM once the export is under way
    while team.get(f"/v1/campaigns/{campaign['id']}").json()["exported"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    server.proc.terminate()
    started = time.monotonic()
    server.proc.wait(timeout=120)
    stopped_in = time.monotonic() - started
    server.log.close()
    assert stopped_in < 10, f"SIGTERM waited {stopped_in:.1f} s for the export"
    with sqlite3.connect(data / "profiler.db") as conn:  # stopped part-way, not run to its end
        state, items = conn.execute(
            "SELECT state, (SELECT count(*) FROM campaign_items WHERE campaign_id = c.id) FROM campaigns c"
        ).fetchone()
    assert state == "exporting" and items < n, (state, items)
    server = LiveServer(data, port=server.port).start(timeout=240)
    try:
        deadline = time.monotonic() + 300
        view = team.get(f"/v1/campaigns/{campaign['id']}").json()
        while view["state"] == "exporting" and time.monotonic() < deadline:
            time.sleep(0.5)
            view = team.get(f"/v1/campaigns/{campaign['id']}").json()
        assert view["state"] == "running" and view["jobs"] == n and view["exported"] == n, view
        with sqlite3.connect(data / "profiler.db") as conn:
            shas = conn.execute("SELECT artifact_sha256 FROM jobs WHERE campaign_id = ?", (campaign["id"],)).fetchall()
        assert len(set(shas)) == len(shas) == n
    finally:
        server.stop()
