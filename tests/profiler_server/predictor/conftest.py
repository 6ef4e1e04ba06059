"""Fixtures: a server app on a temp SQLite file, and a predictor fitted on synthetic measurements."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from predictor_data import ADMIN, DEVICE_CLASS, RUNTIME, store_measurements, synthetic_blocks

from profiler_server.app import create_app
from profiler_server.predictor.fit import TrainSettings
from profiler_server.settings import Settings

__all__ = ["RUNTIME"]


@pytest.fixture
def app_client(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN)
    app = create_app(settings)
    # two members: the served ensemble path, at a fraction of the five members' training time
    app.state.predictor.settings = TrainSettings(hidden=64, max_epochs=200, patience=30, members=2)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def fitted(app_client: TestClient) -> dict:
    """A ready predictor fitted on 160 synthetic conv/lir measurements; returns its JSON."""
    db = app_client.app.state.db
    store_measurements(db, DEVICE_CLASS, RUNTIME, synthetic_blocks(160))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    r = app_client.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "runtime": "onnxruntime"},
                        headers=headers)
    assert r.status_code == 202, r.text
    app_client.app.state.predictor.wait(r.json()["id"], timeout=120)
    row = app_client.get(f"/v1/predictors/{r.json()['id']}").json()
    assert row["state"] == "ready", row
    return row
