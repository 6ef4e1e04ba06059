"""``profiler-server --host-device`` as a real process on loopback: SIGTERM stops the agent before
the server (its job is reported or released, and the campaign completes after a restart); the
agent is restarted when it dies, stops when the server is killed, keeps one token across starts,
and never shows that token on its command line."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from farm_helpers import ADMIN, LiveServer, bearer, small_configs

from android_harness.host import host_device_class

pytestmark = pytest.mark.slow
START_S = 240  # a start imports torch; generous on a busy machine
TOKEN_FILE = "host_agent_token"  # in the data folder (README)
TOKEN_NAME = "host-device (profiler-server --host-device)"


def _start(data: Path, port: int | None = None, **env: str) -> LiveServer:
    env = {"RTSEG_HOST_AGENT_GRACE_S": "10", **env}
    return LiveServer(data, port=port, env=env, args=("--host-device",)).start(timeout=START_S)


def _wait(predicate, timeout: float, what: str, poll: float = 0.3):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} within {timeout} s")


def _agent_pids(server: LiveServer) -> list[int]:
    server.log.flush()
    text = (server.data_dir.parent / f"server-{server.port}.log").read_text(errors="replace")
    return [int(p) for p in re.findall(r"host-device agent started \(pid (\d+)\)", text)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _device(server: LiveServer) -> dict:
    devices = httpx.get(f"{server.url}/v1/devices", headers=bearer(ADMIN), timeout=10).json()
    return next((d for d in devices if d["serial"] == "host"), {})


def _device_online(server: LiveServer) -> bool:
    return _device(server).get("online", False)


def _db_rows(data: Path, query: str) -> list[tuple]:
    with sqlite3.connect(data / "profiler.db") as conn:
        return conn.execute(query).fetchall()


def test_sigterm_mid_job_hands_the_job_back_and_the_campaign_completes_after_restart(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    server = _start(data, RTSEG_LEASE_S="30")
    admin = httpx.Client(base_url=server.url, headers=bearer(ADMIN), timeout=120)
    body = {"device_class": host_device_class(), "configs": small_configs(3), "warmup": 1, "runs": 5,
            "min_seconds": 1, "wait_s": 60}  # fmt: skip
    campaign = admin.post("/v1/campaigns", json=body).json()
    url = f"/v1/campaigns/{campaign['id']}"
    try:
        _wait(lambda: admin.get(url).json()["running"] >= 1, 120, "no job started")
    finally:
        server.stop()  # SIGTERM while a job runs (and no server left behind a failed wait)
    assert server.proc.returncode is not None
    # the agent reported its measurement or released its lease before the server stopped
    assert _db_rows(data, "SELECT id FROM jobs WHERE state = 'running'") == []
    server = _start(data, port=server.port, RTSEG_LEASE_S="30")
    try:
        view = _wait(lambda: (v := admin.get(url).json())["state"] == "done" and v, 120, "campaign not done")
        assert (view["done"], view["failed"]) == (3, 0), view
        per_job = _db_rows(data, "SELECT job_id, count(*) FROM measurements GROUP BY job_id")
        assert len(per_job) == 3 and {n for _, n in per_job} == {1}
    finally:
        server.stop()


def test_host_agent_is_supervised_and_its_token_kept_off_the_command_line(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    server = _start(data)
    try:
        _wait(lambda: _device_online(server), 120, "host device not registered")
        first = _wait(lambda: _agent_pids(server), 30, "no agent start logged")[0]
        token = (data / TOKEN_FILE).read_text().strip()
        cmdline = Path(f"/proc/{first}/cmdline").read_bytes().decode().split("\0")
        assert token not in cmdline and "--token" not in cmdline  # ps shows the command line to everyone
        os.kill(first, signal.SIGKILL)  # the agent dies: the server starts another
        agent_id = _device(server)["agent_id"]
        second = _wait(lambda: [p for p in _agent_pids(server) if p != first], 60, "agent not restarted")[0]
        _wait(lambda: _device(server)["agent_id"] != agent_id, 120, "restarted agent not registered")
        server.kill()  # the server dies: its orphaned agent stops on its own
        _wait(lambda: not _alive(second), 30, "orphaned agent still running", poll=0.5)
    except BaseException:
        server.kill()  # leave no server behind a failed check
        raise
    server.log.close()
    server = _start(data, port=server.port)
    try:
        _wait(lambda: _device_online(server), 120, "host device not registered after restart")
        assert (data / TOKEN_FILE).read_text().strip() == token  # reused, not minted anew
        live = _db_rows(data, f"SELECT count(*) FROM tokens WHERE name = '{TOKEN_NAME}' AND NOT revoked")
        assert live == [(1,)]
    finally:
        server.stop()
