"""The agent process: leases and results committed in a process of their own, which is replaced
when it dies (the calls it held answered 503, nothing stored twice), answers what it was sent
before it stops, and ends by itself when the server process is killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from farm_helpers import ADMIN, DEVICE_CLASS, Farm, LiveServer, bearer, make_settings, small_configs, stats
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from profiler_server.agent_process import AgentProcess, Unavailable
from profiler_server.app import create_app
from profiler_server.db import Measurement


def _lease_body(farm: Farm) -> bytes:
    return json.dumps({"agent_id": farm.agent_id, "serial": farm.serial}).encode()


def _token(farm: Farm) -> str:
    return farm.agent["Authorization"].removeprefix("Bearer ")


def _measurements(farm: Farm) -> int:
    with farm.client.app.state.db.sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(Measurement))


def test_leases_and_results_are_committed_in_another_process(farm: Farm) -> None:
    farm.campaign(small_configs(1))
    job = farm.lease()
    worker = farm.client.app.state.agent_process._worker
    assert worker.runner.pid not in (None, os.getpid()) and worker.runner.is_alive()
    assert farm.report(job).status_code == 200
    assert _measurements(farm) == 1


def test_a_killed_agent_process_answers_its_calls_503_and_the_next_call_starts_a_new_one(farm: Farm) -> None:
    farm.campaign(small_configs(2))
    job = farm.lease()
    agents: AgentProcess = farm.client.app.state.agent_process
    first = agents._worker.runner
    os.kill(first.pid, signal.SIGSTOP)  # it takes no more calls; the next one waits in its pipe

    async def held_when_killed() -> None:
        call = asyncio.ensure_future(agents.run("lease", _token(farm), None, _lease_body(farm)))
        await asyncio.sleep(0.2)
        assert not call.done()
        os.kill(first.pid, signal.SIGKILL)
        with pytest.raises(Unavailable, match="stopped; try again"):
            await asyncio.wait_for(call, 10)

    asyncio.run(held_when_killed())
    first.join(10)
    assert first.exitcode == -signal.SIGKILL
    # the lease taken before is still the agent's: its result is stored once, by a new process
    assert farm.report(job).status_code == 200
    assert agents._worker.runner.pid != first.pid
    assert farm.report(job).status_code == 409
    assert _measurements(farm) == 1
    second = farm.lease()  # the call that died with the process leased nothing: the queue is intact
    assert second is not None and second["job_id"] != job["job_id"]


def test_close_answers_every_call_sent_before_it(farm: Farm) -> None:
    farm.campaign(small_configs(6))
    agents: AgentProcess = farm.client.app.state.agent_process

    async def send_then_close() -> list:
        calls = [asyncio.ensure_future(agents.run("lease", _token(farm), None, _lease_body(farm))) for _ in range(6)]
        await asyncio.sleep(0)  # every call is in the pipe
        await asyncio.to_thread(agents.close)
        return await asyncio.gather(*calls)

    answers = asyncio.run(send_then_close())
    assert [status for status, _ in answers] == [200] * 6
    assert len({json.loads(body)["job"]["job_id"] for _, body in answers}) == 6


def test_without_a_process_the_same_calls_run_in_a_thread(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, agent_process=False))) as client:
        admin = bearer(ADMIN)
        team = bearer(client.post("/v1/teams", json={"name": "t"}, headers=admin).json()["token"])
        agent = bearer(client.post("/v1/tokens", json={"role": "agent"}, headers=admin).json()["token"])
        devices = [{"serial": "d", "device_class": DEVICE_CLASS, "kind": "host"}]
        agent_id = client.post("/v1/agents", json={"name": "a", "devices": devices}, headers=agent).json()["agent_id"]
        body = {"device_class": DEVICE_CLASS, "configs": small_configs(1)}
        assert client.post("/v1/campaigns", json=body, headers=team).status_code == 201
        job = client.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": "d"}, headers=agent).json()["job"]
        assert isinstance(client.app.state.agent_process._worker.runner, threading.Thread)
        result = {"lease_id": job["lease_id"], "serial": "d", "stats": stats()}
        assert client.post(f"/v1/jobs/{job['job_id']}/result", json=result, headers=agent).status_code == 200
        assert client.post(f"/v1/jobs/{job['job_id']}/result", json=result, headers=agent).status_code == 409


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
    family = {pid}
    for _ in range(4):
        family |= {p for p, parent in parents.items() if parent in family}
    return family - {pid}


def test_the_agent_process_ends_when_the_server_process_is_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = LiveServer(data).start()
    try:
        r = httpx.post(f"{server.url}/v1/tokens", json={"role": "agent"}, headers=bearer(ADMIN), timeout=10)
        assert r.status_code == 201
        children = _descendants(server.proc.pid)
        agent_processes = {p for p in children if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()}
        assert agent_processes, "the server started its agent process (and the fork server behind it)"
    finally:
        server.kill()  # SIGKILL: no shutdown runs
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in agent_processes):
        time.sleep(0.1)
    left = [p for p in agent_processes if Path(f"/proc/{p}").exists() and b"zombie" not in
            Path(f"/proc/{p}/status").read_bytes().lower()]  # fmt: skip
    assert not left, f"agent processes outlived the killed server: {left}"
