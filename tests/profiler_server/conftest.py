"""Fixtures: an app on a file SQLite DB in tmp_path, tokens for each role, a registered agent,
and a real uvicorn server in a subprocess for the reliability tests (helpers in farm_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from farm_helpers import ADMIN, Farm, LiveServer, bearer, make_settings, register_agent
from fastapi.testclient import TestClient

from profiler_server.app import create_app
from profiler_server.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def farm(client: TestClient) -> Farm:
    admin = bearer(ADMIN)
    team = client.post("/v1/teams", json={"name": "vision"}, headers=admin).json()["token"]
    agent = client.post("/v1/tokens", json={"role": "agent", "name": "a"}, headers=admin).json()["token"]
    agent_id = register_agent(client, bearer(agent), ["dev-1", "dev-2"])
    return Farm(client, admin, bearer(team), bearer(agent), agent_id)


@pytest.fixture
def live_server(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    server = LiveServer(data).start()
    yield server
    server.stop()
