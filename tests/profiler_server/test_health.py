"""Liveness, readiness and Prometheus metrics reflect the farm's state."""

from __future__ import annotations

import os

from farm_helpers import Farm, small_configs
from sqlalchemy import create_engine


def test_livez_readyz(client):
    assert client.get("/livez").json() == {"ok": True}
    assert client.get("/readyz").json() == {"ok": True, "pid": os.getpid()}  # which process answered


def test_readyz_is_503_when_the_database_is_unreachable(client):
    client.app.state.db.engine = create_engine("sqlite:////nonexistent-dir/sub/x.db")
    r = client.get("/readyz")
    assert r.status_code == 503 and "database unreachable" in r.json()["detail"]


def test_metrics_count_jobs_queue_devices_and_latency(farm: Farm):
    farm.campaign(small_configs(3))
    farm.report(farm.lease())
    text = farm.client.get("/metrics").text
    assert 'rtseg_jobs{state="queued"} 2.0' in text
    assert 'rtseg_jobs{state="done"} 1.0' in text
    assert 'rtseg_queue_depth{device_class="host/test-cpu"} 2.0' in text
    assert "rtseg_devices_online 2.0" in text
    assert 'rtseg_request_seconds_count{method="POST",route="/v1/jobs/lease",status="200"} 1.0' in text
    farm.client.post("/v1/predict", json={"device_class": "nowhere", "blocks": []})
    assert 'route="/v1/predict"' in farm.client.get("/metrics").text, "the fast routes are labelled"


def test_every_answer_tells_its_server_time(client):
    for r in (client.get("/livez"), client.get("/v1/no-such-route"), client.post("/v1/predict", content=b"{")):
        name, _, duration = r.headers["server-timing"].partition(";dur=")
        assert name == "app" and 0 <= float(duration) < 60_000, r.headers["server-timing"]
