"""A fit cut short by a server stop is not lost: shutdown stops it and the next start fits it again."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from predictor_data import ADMIN, AUTH, DEVICE_CLASS, RUNTIME, store_measurements, synthetic_blocks

from profiler_server.app import create_app
from profiler_server.db import Database, PredictorVersion
from profiler_server.predictor.fit import TrainSettings
from profiler_server.settings import Settings


def _state(settings: Settings, predictor_id: int) -> str:
    db = Database(settings.database_url)
    try:
        with db.transaction() as s:
            return s.get(PredictorVersion, predictor_id).state
    finally:
        db.dispose()


def test_a_fit_stopped_by_shutdown_is_fitted_again_on_the_next_start(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN)
    app = create_app(settings)
    app.state.predictor.settings = TrainSettings(max_epochs=100_000, patience=100_000, max_seconds=600)
    store_measurements(app.state.db, DEVICE_CLASS, RUNTIME, synthetic_blocks(160))
    with TestClient(app) as client:
        r = client.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "statistic": "median_ms"}, headers=AUTH)
        assert r.status_code == 202, r.text
        predictor_id = r.json()["id"]
    # leaving the client ran the app's shutdown: the 10-minute fit stops at its next epoch
    app.state.predictor.wait(predictor_id, timeout=30)
    assert _state(settings, predictor_id) == "fitting"

    again = create_app(settings)  # resumes the fit with the service's default settings
    again.state.predictor.wait(predictor_id, timeout=300)
    with TestClient(again) as client:
        row = client.get(f"/v1/predictors/{predictor_id}").json()
    assert row["state"] == "ready" and row["metrics"]["statistic"] == "median_ms", row
