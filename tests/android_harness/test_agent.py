"""The phone-agent against the real profiler server (uvicorn on loopback, SQLite in tmp_path), with
the host CPU and an emulated phone (real adb server) as devices; plus its pieces on their own."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from android_harness.agent import Agent, AgentConfig
from android_harness.artifact_cache import ArtifactCache, ArtifactMismatch
from android_harness.host import host_device_class
from android_harness.server_client import ServerClient, ServerUnavailable, backoff_delays
from testkit.live_server import ThreadedServer, free_port
from testkit.standins import standin_path

ADMIN = "admin-token-for-agent-tests-0123"


class Server(ThreadedServer):
    """profiler_server's app under a real uvicorn on 127.0.0.1, in a thread; restartable on its port."""

    def __init__(self, data_dir: Path) -> None:
        from profiler_server.app import create_app
        from profiler_server.settings import Settings

        settings = Settings(data_dir=data_dir, admin_token=ADMIN, reaper_interval_s=0.2, heartbeat_s=0.5, lease_s=30.0)
        super().__init__(lambda: create_app(settings))
        self.data_dir = data_dir

    def post(self, path: str, token: str, json: dict) -> dict:
        r = httpx.post(self.url + path, json=json, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code < 300, r.text
        return r.json()

    def get(self, path: str, token: str = ADMIN) -> dict:
        r = httpx.get(self.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def tokens(self) -> tuple[str, str]:
        team = self.post("/v1/teams", ADMIN, {"name": "lab"})["token"]
        agent = self.post("/v1/tokens", ADMIN, {"role": "agent", "name": "farm"})["token"]
        return team, agent

    def campaign(self, team: str, device_class: str, n: int, min_seconds: float = 0.05) -> dict:
        configs = [{"kind": "conv", "cin": 8, "cout": 8 + 4 * i, "kernel": 3, "stride": 1, "h": 16, "w": 16}
                   for i in range(n)]
        return self.post("/v1/campaigns", team, {"device_class": device_class, "configs": configs, "warmup": 10,
                                                 "runs": 50, "min_seconds": min_seconds, "wait_s": 30})

    def network(self, team: str, device_class: str, model: Path, min_seconds: float) -> int:
        """Upload a whole network for measurement; returns its job id."""
        r = httpx.post(self.url + "/v1/networks", headers={"Authorization": f"Bearer {team}"}, timeout=60,
                       files={"file": (model.name, model.read_bytes())},
                       data={"device_class": device_class, "runtime": "onnxruntime", "min_seconds": str(min_seconds)})
        assert r.status_code == 201, r.text
        return r.json()["job_id"]


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server").start()
    yield srv
    srv.stop()


def agent_config(server: Server, token: str, tmp_path: Path, **kw) -> AgentConfig:
    base = dict(server=server.url, token=token, name="test-farm", cache_dir=tmp_path / "cache", poll_s=0.2,
                backoff_cap_s=0.5, shutdown_grace_s=10.0, request_timeout_s=10.0)
    return AgentConfig(**{**base, **kw})


def run_in_thread(agent: Agent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_agent_measures_host_and_phone_jobs_and_reports_them(server, adb_server, emulator, tmp_path):
    team, token = server.tokens()
    serial = adb_server.connect(emulator.address)
    try:
        host_campaign = server.campaign(team, host_device_class(), n=3)
        phone_campaign = server.campaign(team, "Pixel 7/gs201", n=2)
        config = agent_config(server, token, tmp_path, host_device=True, adb_port=adb_server.port, max_jobs=5,
                              binaries={"onnxruntime_perf_test": standin_path("onnxruntime_perf_test")})
        agent = Agent(config)
        thread = run_in_thread(agent)
        thread.join(90)
        assert not thread.is_alive(), "agent did not finish its 5 jobs"
    finally:
        adb_server.disconnect(emulator.address)
    host_rows = server.get(f"/v1/measurements?campaign_id={host_campaign['id']}")
    phone_rows = server.get(f"/v1/measurements?campaign_id={phone_campaign['id']}")
    assert len(host_rows) == 3 and len(phone_rows) == 2
    assert all(r["median_ms"] > 0 for r in host_rows + phone_rows)
    assert {r["config"]["cout"] for r in host_rows} == {8, 12, 16}
    # each artifact was downloaded once into the cache and verified
    cached = list((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) == 3  # the phone campaign reuses two of the host campaign's artifacts
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in cached)
    phone_runs = [argv for argv, _ in emulator.exec_log]
    # 2 jobs x (warm-up pass + timed pass), more if a noisy run was re-measured
    assert len(phone_runs) >= 4 and len(phone_runs) % 2 == 0
    assert all(argv[0] == "taskset f0" for argv in phone_runs)
    assert all(r["device_class"] == "Pixel 7/gs201" for r in phone_rows if "device_class" in r), serial


def requests_served(server: Server, path: str) -> float:
    """How many requests the server answered 200 on the route ``path``, from its /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    key = f'route="{path}",status="200"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("rtseg_request_seconds_count{") and key in line)


def test_agent_reports_each_result_and_leases_the_next_job_in_one_call(server, tmp_path):
    """A measured job costs the agent one request: the result asks for the device's next job."""
    team, token = server.tokens()
    campaign = server.campaign(team, host_device_class(), n=4, min_seconds=0.01)
    agent = Agent(agent_config(server, token, tmp_path, host_device=True, use_adb=False, max_jobs=4))
    thread = run_in_thread(agent)
    thread.join(120)
    assert not thread.is_alive(), "agent did not finish its 4 jobs"
    assert len(server.get(f"/v1/measurements?campaign_id={campaign['id']}")) == 4
    assert requests_served(server, "/v1/jobs/{job_id}/result") == 4
    assert requests_served(server, "/v1/jobs/lease") == 1, "jobs 2-4 came with the results"


@pytest.mark.slow
def test_agent_survives_a_server_restart(tmp_path):
    server = Server(tmp_path / "server").start()
    team, token = server.tokens()
    agent = Agent(agent_config(server, token, tmp_path, host_device=True, use_adb=False, max_jobs=2))
    thread = run_in_thread(agent)
    try:
        wait_for(lambda: agent.agent_id, 20, "registration")
        server.stop()
        time.sleep(1.5)  # the agent keeps retrying with backoff meanwhile
        assert thread.is_alive()
        server.start()  # same port, same database
        campaign = server.campaign(team, host_device_class(), n=2)
        thread.join(60)
        assert not thread.is_alive(), "agent did not finish after the restart"
        rows = server.get(f"/v1/measurements?campaign_id={campaign['id']}")
        assert len(rows) == 2
    finally:
        agent.stop()
        server.stop()


@pytest.mark.slow
def test_phone_unplugged_mid_job_is_reported_not_lost(server, adb_server, emulator, tmp_path, lir_onnx):
    team, token = server.tokens()
    adb_server.connect(emulator.address)
    job_id = server.network(team, "Pixel 7/gs201", lir_onnx, min_seconds=30)
    config = agent_config(server, token, tmp_path, adb_port=adb_server.port,
                          binaries={"onnxruntime_perf_test": standin_path("onnxruntime_perf_test")})
    agent = Agent(config)
    thread = run_in_thread(agent)
    try:
        wait_for(lambda: server.get(f"/v1/jobs/{job_id}")["state"] == "running", 30, "the job to start")
        wait_for(lambda: emulator.fs.processes, 30, "the benchmark to run on the phone")
        emulator.kill()
        job = wait_for(lambda: (j := server.get(f"/v1/jobs/{job_id}"))["state"] == "queued" and j, 20,
                       "the failure report")
        assert "offline" in job["error"] or "lost" in job["error"], job["error"]
        wait_for(lambda: not agent.live_serials(), 10, "the worker of the unplugged phone to stop")
    finally:
        agent.stop()
        thread.join(20)
        adb_server.disconnect(emulator.address)


@pytest.mark.slow
def test_sigterm_releases_a_lease_that_outlives_the_grace_period(server, tmp_path, lir_onnx):
    team, token = server.tokens()
    job_id = server.network(team, host_device_class(), lir_onnx, min_seconds=60)
    agent = Agent(agent_config(server, token, tmp_path, host_device=True, use_adb=False, shutdown_grace_s=0.5))
    thread = run_in_thread(agent)
    wait_for(lambda: server.get(f"/v1/jobs/{job_id}")["state"] == "running", 30, "the job to start")
    started = time.monotonic()
    agent.stop()  # what the SIGTERM handler does
    thread.join(20)
    assert not thread.is_alive() and time.monotonic() - started < 10
    assert server.get(f"/v1/jobs/{job_id}")["state"] == "queued"


@pytest.mark.slow
def test_phone_agent_process_releases_its_lease_on_sigterm(server, tmp_path, lir_onnx):
    team, token = server.tokens()
    job_id = server.network(team, host_device_class(), lir_onnx, min_seconds=60)
    cmd = [sys.executable, "-m", "android_harness.cli", "--server", server.url, "--token", token, "--host-device",
           "--no-adb", "--cache-dir", str(tmp_path / "cache"), "--shutdown-grace", "0.5", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for(lambda: server.get(f"/v1/jobs/{job_id}")["state"] == "running", 40, "the job to start")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "releasing job" in output
    assert server.get(f"/v1/jobs/{job_id}")["state"] == "queued"


def test_artifact_cache_verifies_sha256_and_downloads_once(tmp_path):
    data = b"model bytes"
    sha = hashlib.sha256(data).hexdigest()
    cache = ArtifactCache(tmp_path)
    calls = []
    path = cache.get(sha, "onnx", lambda: calls.append(1) or data)
    assert path.read_bytes() == data and cache.get(sha, "onnx", lambda: calls.append(1) or data) == path
    assert len(calls) == 1
    path.write_bytes(b"corrupted on disk")
    assert cache.get(sha, "onnx", lambda: data).read_bytes() == data  # re-downloaded
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ArtifactMismatch, match="refusing"):
        cache.get(other, "onnx", lambda: b"tampered")
    assert not cache.path_for(other, "onnx").exists()


def test_backoff_is_capped_exponential():
    import random

    delays = backoff_delays(0.5, 4.0, 2.0, jitter=0.0, rng=random.Random(0))
    assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_client_gives_up_after_the_outage_limit_and_on_stop():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = ServerClient(url, "t", backoff_initial_s=0.05, backoff_cap_s=0.1, max_outage_s=0.5)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match="failed"):
        client.lease("a", "s")
    assert 0.3 < time.monotonic() - started < 5
    stop = threading.Event()
    client = ServerClient(url, "t", backoff_initial_s=5.0, max_outage_s=60, stop=stop)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match="stopping"):
        client.lease("a", "s")
    assert time.monotonic() - started < 3


def test_a_leased_kernel_is_measured_without_its_layout_conversions() -> None:
    """Only one-kernel models leave out the conversions their isolation adds; blocks and whole
    networks are measured as they run."""
    from datetime import UTC, datetime

    from android_harness.agent import lease_options
    from shared.schemas import JobLease, RuntimeSettings

    def lease(kind: str) -> JobLease:
        return JobLease(job_id=1, lease_id="l", lease_expires_at=datetime.now(UTC), artifact_sha256="a" * 64,
                        kind=kind, artifact_url="/v1/artifacts/x", format="onnx",
                        settings=RuntimeSettings(runtime="onnxruntime"))

    assert lease_options(lease("kernel"), 60).exclude_layout_reorders
    assert not lease_options(lease("network"), 60).exclude_layout_reorders
    assert not lease_options(lease("conv"), 60).exclude_layout_reorders
