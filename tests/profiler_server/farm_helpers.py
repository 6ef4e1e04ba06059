"""Helpers for the server tests: tokens, synthetic stats, cheap configs, a Farm of roles, and
``profiler-server`` as a real process with the tests' settings (a uniquely named module: every test
folder has a conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from profiler_server import jobs
from profiler_server.settings import Settings
from testkit.live_server import ServerProcess

ADMIN = "admin-test-token-0123456789"
DEVICE_CLASS = "host/test-cpu"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stats(median: float = 1.0) -> dict:
    return {
        "median_ms": median, "mean_ms": median * 1.05, "p10_ms": median * 0.95, "p90_ms": median * 1.1,
        "std_ms": 0.01, "runs": 3, "samples_ms": [median, median, median * 1.1], "tool": "synthetic",
    }  # fmt: skip


def small_configs(n: int, offset: int = 0) -> list[dict]:
    """n distinct cheap-to-export conv blocks."""
    return [
        {"kind": "conv", "cin": 3, "cout": 4 + i + offset, "kernel": 3, "stride": 1, "h": 8, "w": 8}
        for i in range(n)
    ]


@dataclass
class Farm:
    client: TestClient
    admin: dict[str, str]
    team: dict[str, str]
    agent: dict[str, str]
    agent_id: str
    serial: str = "dev-1"

    def campaign(self, configs: list[dict], headers: dict | None = None, **extra) -> dict:
        body = {"device_class": DEVICE_CLASS, "configs": configs, **extra}
        r = self.client.post("/v1/campaigns", json=body, headers=headers or self.team)
        assert r.status_code == 201, r.text
        return r.json()

    def lease(self, serial: str | None = None, agent_id: str | None = None) -> dict | None:
        body = {"agent_id": agent_id or self.agent_id, "serial": serial or self.serial}
        r = self.client.post("/v1/jobs/lease", json=body, headers=self.agent)
        assert r.status_code == 200, r.text
        return r.json()["job"]

    def report(self, job: dict, serial: str | None = None, median: float = 1.0, **extra) -> httpx.Response:
        body = {"lease_id": job["lease_id"], "serial": serial or self.serial, "stats": stats(median), **extra}
        return self.client.post(f"/v1/jobs/{job['job_id']}/result", json=body, headers=self.agent)


def register_agent(
    client: TestClient, headers: dict, serials: list[str], device_class: str = DEVICE_CLASS
) -> str:
    devices = [{"serial": s, "device_class": device_class, "kind": "host"} for s in serials]
    r = client.post("/v1/agents", json={"name": "test-agent", "devices": devices}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["agent_id"]


def make_settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=ADMIN, reaper_interval_s=0.2, **overrides)


class LiveServer(ServerProcess):
    """``profiler-server`` as a real process with the tests' admin token and a fast lease reaper."""

    def __init__(self, data_dir: Path, port: int | None = None, env: dict | None = None,
                 args: tuple[str, ...] = (), workers: int = 1) -> None:
        super().__init__(data_dir, port, {"RTSEG_ADMIN_TOKEN": ADMIN, "RTSEG_REAPER_INTERVAL_S": "0.2", **(env or {})},
                         args, workers)


def lease_until_empty(db, serial: str, on_lease, device_class: str = "host/x") -> None:
    """Lease jobs of ``device_class`` for ``serial`` straight from the database, one session per
    lease, calling ``on_lease(db, serial, view)`` for each, until nothing is queued (a bounded queue)."""
    while True:
        with db.transaction() as s:
            view = jobs.lease_job(s, serial, device_class, 60)
        if view is None:
            return
        on_lease(db, serial, view)
