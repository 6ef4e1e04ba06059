"""A measured whole network (no block config) never breaks a predictor fit of its device class."""

from __future__ import annotations

import torch
from predictor_data import AUTH, DEVICE_CLASS, RUNTIME, store_measurements, synthetic_blocks
from sqlalchemy import text

from shared.export import export_module_onnx


def _measure_network(client) -> int:
    """Upload a real ONNX network and measure it through the agent protocol; returns its job id."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    data = export_module_onnx(net, [torch.randn(1, 3, 16, 16)])
    files = {"file": ("net.onnx", data, "application/octet-stream")}
    r = client.post("/v1/networks", files=files, data={"device_class": DEVICE_CLASS}, headers=AUTH)
    assert r.status_code == 201, r.text
    agent = {
        "Authorization": "Bearer "
        + client.post("/v1/tokens", json={"role": "agent"}, headers=AUTH).json()["token"]
    }
    devices = [{"serial": "dev-n", "device_class": DEVICE_CLASS, "kind": "host"}]
    agent_id = client.post("/v1/agents", json={"name": "a", "devices": devices}, headers=agent).json()[
        "agent_id"
    ]
    job = client.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": "dev-n"}, headers=agent).json()[
        "job"
    ]
    stats = {"median_ms": 2.0, "mean_ms": 2.0, "p10_ms": 1.9, "p90_ms": 2.1, "std_ms": 0.1, "runs": 3,
             "samples_ms": [2.0, 2.0, 2.0]}  # fmt: skip
    body = {"lease_id": job["lease_id"], "serial": "dev-n", "stats": stats}
    assert client.post(f"/v1/jobs/{job['job_id']}/result", json=body, headers=agent).status_code == 200
    return job["job_id"]


def test_fit_after_a_network_measurement_succeeds(app_client):
    db = app_client.app.state.db
    store_measurements(db, DEVICE_CLASS, RUNTIME, synthetic_blocks(120))
    job_id = _measure_network(app_client)
    r = app_client.post("/v1/predictors", json={"device_class": DEVICE_CLASS}, headers=AUTH)
    assert r.status_code == 202, r.text
    app_client.app.state.predictor.wait(r.json()["id"], timeout=120)
    row = app_client.get(f"/v1/predictors/{r.json()['id']}").json()
    assert row["state"] == "ready", row["error"]
    with db.engine.connect() as conn:  # stored as SQL NULL, not as the JSON text 'null'
        assert (
            conn.execute(text(f"SELECT config IS NULL FROM measurements WHERE job_id = {job_id}")).scalar()
            == 1
        )
