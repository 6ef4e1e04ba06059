"""A real profiler server (uvicorn on 127.0.0.1, SQLite in tmp) with teams, an agent holding
host-CPU devices, and predictors stored straight in its database: what the client tests talk to."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import torch
from fastapi import FastAPI

from profiler_server.app import create_app
from profiler_server.db.models import PredictorVersion
from profiler_server.settings import Settings
from shared.export import sha256_bytes
from shared.predictor import dump_predictor
from testkit.live_server import ThreadedServer

ADMIN = "admin-token-for-client-tests-0123"
DEVICE_CLASS = "host/test-cpu"
SERIAL = "test-host-1"


@dataclass
class LiveFarm:
    tmp_path: object
    teams: dict[str, str] = field(default_factory=dict)  # team name -> its token
    agent_token: str = ""
    agent_id: str = ""

    def __post_init__(self) -> None:
        settings = Settings(data_dir=self.tmp_path / "data", db_url=f"sqlite:///{self.tmp_path}/farm.db",
                            admin_token=ADMIN)
        self.server = ThreadedServer(lambda: create_app(settings))
        self.port, self.url = self.server.port, self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=60)

    @property
    def app(self) -> FastAPI | None:
        return self.server.app

    def start(self) -> LiveFarm:
        self.server.start()
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.stop()

    def call(self, method: str, path: str, token: str = ADMIN, expect: int | None = None, **kw) -> httpx.Response:
        resp = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        if expect is not None:
            assert resp.status_code == expect, resp.text
        return resp

    def add_team(self, name: str) -> str:
        self.teams[name] = self.call("POST", "/v1/teams", json={"name": name}, expect=201).json()["token"]
        return self.teams[name]

    def add_agent(self, devices: list[dict]) -> str:
        """An agent token and one registration holding ``devices`` (DeviceInfo dicts)."""
        body = {"role": "agent", "name": "test agent"}
        self.agent_token = self.call("POST", "/v1/tokens", json=body, expect=201).json()["token"]
        answer = self.call("POST", "/v1/agents", token=self.agent_token, expect=201,
                           json={"name": "test-agent", "devices": devices}).json()
        self.agent_id = answer["agent_id"]
        return self.agent_id

    def add_predictor(self, model: torch.nn.Module, device_class: str = DEVICE_CLASS,
                      runtime: str = "onnxruntime/t1/cpu", version: int = 1) -> None:
        blob = dump_predictor(model, {"device_class": device_class, "runtime": runtime})
        with self.app.state.db.transaction() as session:
            session.add(PredictorVersion(device_class=device_class, runtime=runtime, version=version, state="ready",
                                         blob=blob, blob_sha256=sha256_bytes(blob), metrics={"mape": 0.05},
                                         n_train=240, n_test=60))
            session.commit()


def host_device(serial: str = SERIAL, device_class: str = DEVICE_CLASS, runtimes: tuple[str, ...] = ("onnxruntime",)) -> dict:
    return {"serial": serial, "device_class": device_class, "kind": "host", "runtimes": list(runtimes)}
