"""``profiler-server``: clear exit on a bad database; ``--host-device`` gives a working farm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from farm_helpers import ADMIN, bearer, small_configs

from android_harness.host import host_device_class
from profiler_server.cli import main
from testkit.live_server import free_port


def test_bad_database_url_exits_2_with_one_line(tmp_path, capsys):
    assert main(["--db", "nosuchdialect://x", "--data", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("profiler-server: cannot open the database")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_host_device_flag_runs_an_agent_that_measures_and_stops_with_the_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RTSEG_ADMIN_TOKEN": ADMIN}
    cmd = [sys.executable, "-m", "profiler_server.cli", "--data", str(tmp_path / "data"), "--port", str(port),
           "--host-device", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            _up(url) and httpx.get(f"{url}/v1/devices", headers=bearer(ADMIN)).json()
        ):
            time.sleep(0.3)
        device_class = host_device_class()
        assert [d["device_class"] for d in httpx.get(f"{url}/v1/devices", headers=bearer(ADMIN)).json()] == [
            device_class
        ]
        body = {
            "device_class": device_class,
            "configs": small_configs(2),
            "warmup": 1,
            "runs": 5,
            "min_seconds": 0,
        }
        campaign = httpx.post(f"{url}/v1/campaigns", json=body, headers=bearer(ADMIN), timeout=60).json()
        while time.monotonic() < deadline:
            view = httpx.get(f"{url}/v1/campaigns/{campaign['id']}", headers=bearer(ADMIN)).json()
            if view["state"] == "done":
                break
            time.sleep(0.3)
        assert view["done"] == 2, view
        rows = httpx.get(f"{url}/v1/measurements", params={"campaign_id": campaign["id"]}, headers=bearer(ADMIN)).json()
        assert all(r["median_ms"] > 0 and len(r["samples_ms"]) >= 5 for r in rows)  # real onnxruntime timings
        agents = _children(server.pid)
        assert agents, "the agent child process is missing"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    time.sleep(0.5)
    for pid in agents:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_missing_database_driver_names_what_to_install(tmp_path, capsys):
    assert main(["--db", "mysql://farm:s3cret-pw@127.0.0.1/farm", "--data", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "'MySQLdb' is not installed" in lines[0] and "pip install" in lines[0]
    assert "s3cret-pw" not in lines[0]


def test_unreachable_postgres_never_echoes_the_password(tmp_path, capsys):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://farm:s3cret-pw@127.0.0.1:{free_port()}/farm"  # nothing listens there
    assert main(["--db", url, "--data", str(tmp_path)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "farm:***@127.0.0.1" in lines[0], lines
    assert "s3cret-pw" not in out.out + out.err
