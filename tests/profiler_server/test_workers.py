"""``profiler-server --workers N``: several server processes on one port and one SQLite file share
the queue (every job leased once, every result stored once), and a worker whose supervisor is
killed outright stops instead of serving on alone."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from farm_helpers import ADMIN, DEVICE_CLASS, LiveServer, bearer, small_configs, stats

from profiler_server.cli import main

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_two_workers_share_the_queue_and_store_every_result_once(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    server = LiveServer(data, workers=2).start()
    try:
        assert len(server.worker_pids) == 2, "two processes answer on the port"
        url, admin = server.url, bearer(ADMIN)
        team = bearer(httpx.post(f"{url}/v1/teams", json={"name": "lab"}, headers=admin).json()["token"])
        agent = bearer(httpx.post(f"{url}/v1/tokens", json={"role": "agent"}, headers=admin).json()["token"])
        devices = [{"serial": f"dev-{i}", "device_class": DEVICE_CLASS, "kind": "host"} for i in range(6)]
        agent_id = httpx.post(f"{url}/v1/agents", json={"name": "a", "devices": devices}, headers=agent).json()["agent_id"]
        n = 24
        r = httpx.post(f"{url}/v1/campaigns", json={"device_class": DEVICE_CLASS, "configs": small_configs(n),
                                                    "wait_s": 60}, headers=team, timeout=90)  # fmt: skip
        assert r.status_code == 201 and r.json()["state"] == "running", r.text
        leased: list[int] = []
        errors: list[str] = []

        def work(serial: str) -> None:  # each thread its own connection: the kernel spreads them
            with httpx.Client(base_url=url, headers=agent, timeout=60) as c:
                job = c.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": serial}).json()["job"]
                for _ in range(n + 1):  # bounded: each call stores one result
                    if job is None:
                        return
                    leased.append(job["job_id"])
                    body = {"lease_id": job["lease_id"], "serial": serial, "stats": stats(),
                            "lease_next": True, "agent_id": agent_id}  # fmt: skip
                    answer = c.post(f"/v1/jobs/{job['job_id']}/result", json=body)
                    if answer.status_code != 200:
                        errors.append(answer.text)
                        return
                    job = answer.json()["next_job"]

        threads = [threading.Thread(target=work, args=(d["serial"],)) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert sorted(Counter(leased).values()) == [1] * n, "every job leased exactly once"
        campaign = httpx.get(f"{url}/v1/campaigns/{r.json()['id']}", headers=team).json()
        assert campaign["state"] == "done"
        rows = httpx.get(f"{url}/v1/measurements", params={"device_class": DEVICE_CLASS}, headers=team).json()
        assert sorted(m["job_id"] for m in rows) == sorted(leased)
    finally:
        server.stop()
    for pid in server.worker_pids:
        assert not _alive(pid), "SIGTERM to profiler-server stops its workers"


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    server = LiveServer(data, workers=2).start()
    try:
        server.proc.send_signal(signal.SIGKILL)  # no chance to stop its workers
        server.proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(pid) for pid in server.worker_pids):
            time.sleep(0.5)
        assert not any(_alive(pid) for pid in server.worker_pids), "orphaned workers kept serving"
    finally:
        server.stop()


def test_workers_flag_errors_are_one_line(tmp_path: Path, capsys):
    assert main(["--workers", "0", "--data", str(tmp_path)]) == 2
    assert main(["--workers", "2", "--host-device", "--data", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["profiler-server: --workers must be at least 1",
                     "profiler-server: --host-device runs with --workers 1"]  # fmt: skip
