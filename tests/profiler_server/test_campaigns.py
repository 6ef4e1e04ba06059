"""Campaigns: sampling or explicit configs, export by sha256, dedup against the cache, progress."""

from __future__ import annotations

import hashlib
import time
from collections import Counter

from farm_helpers import DEVICE_CLASS, Farm, small_configs
from sqlalchemy import select

from profiler_server.db import Artifact
from shared.config import parse_block
from shared.export import export_block_onnx, tflite_available


def test_explicit_configs_are_exported_by_sha256_and_queued(farm: Farm):
    configs = small_configs(3)
    view = farm.campaign(configs)
    assert (view["state"], view["jobs"], view["queued"], view["cached"]) == ("running", 3, 3, 0)
    with farm.client.app.state.db.sessionmaker() as s:
        rows = {a.sha256: a for a in s.scalars(select(Artifact))}
    expected = hashlib.sha256(export_block_onnx(parse_block(configs[0]))).hexdigest()
    assert expected in rows and rows[expected].config == parse_block(configs[0]).model_dump()
    body = farm.client.get(f"/v1/artifacts/{expected}", headers=farm.agent).content
    assert hashlib.sha256(body).hexdigest() == expected


def test_repeat_is_answered_from_the_cache(farm: Farm):
    first = farm.campaign(small_configs(3))
    while (job := farm.lease()) is not None:
        assert farm.report(job).status_code == 200
    again = farm.campaign(small_configs(4))  # 3 measured + 1 new
    assert (again["cached"], again["jobs"]) == (3, 1)
    other_runtime = farm.campaign(
        small_configs(3), runtime="onnxruntime/t2/cpu"
    )  # runtime is part of the key
    assert (other_runtime["cached"], other_runtime["jobs"]) == (0, 3)
    rows = farm.client.get("/v1/measurements", params={"campaign_id": again["id"]}, headers=farm.team).json()
    assert len(rows) == 3  # the cached measurements count for the new campaign too
    assert farm.client.get(f"/v1/campaigns/{first['id']}", headers=farm.team).json()["state"] == "done"


def test_refresh_measures_configs_again_in_a_new_session(farm: Farm):
    farm.campaign(small_configs(2))
    while (job := farm.lease()) is not None:
        assert farm.report(job).status_code == 200
    again = farm.campaign(small_configs(2), refresh=True)
    assert (again["cached"], again["jobs"]) == (0, 2)
    while (job := farm.lease()) is not None:
        assert farm.report(job).status_code == 200
    rows = farm.client.get("/v1/measurements", headers=farm.team).json()
    assert sorted(Counter(r["artifact_sha256"] for r in rows).values()) == [2, 2]


def test_a_campaign_waiting_on_another_campaigns_jobs_completes_with_them(farm: Farm):
    farm.campaign(small_configs(2))
    waiting = farm.campaign(small_configs(2))  # same configs, jobs still queued elsewhere
    assert (waiting["cached"], waiting["state"]) == (2, "running")
    while (job := farm.lease()) is not None:
        farm.report(job)
    assert farm.client.get(f"/v1/campaigns/{waiting['id']}", headers=farm.team).json()["state"] == "done"


def test_sampled_campaign_covers_kinds_and_reports_eta(farm: Farm):
    space = {"kinds": {
        "conv": [{"fields": {"cin": {"lo": 3, "hi": 8}, "cout": {"lo": 4, "hi": 8}}, "sizes": [[8, 8]]}],
        "context": [{"fields": {"cin": {"lo": 4, "hi": 16}}, "sizes": [[4, 4]]}],
    }}  # fmt: skip
    r = farm.client.post(
        "/v1/campaigns",
        json={"device_class": DEVICE_CLASS, "space": space, "n": 6, "seed": 3, "sampling": "uniform"},
        headers=farm.team,
    )
    view = r.json()
    assert r.status_code == 201 and view["n"] == 6 and view["jobs"] == 6 and view["sampling"] == "uniform"
    for _ in range(3):
        farm.report(farm.lease())
        time.sleep(0.02)
    view = farm.client.get(f"/v1/campaigns/{view['id']}", headers=farm.team).json()
    assert view["done"] == 3 and view["queued"] == 3 and view["eta_s"] > 0
    kinds = {row["kind"] for row in farm.client.get("/v1/measurements", headers=farm.team).json()}
    assert kinds <= {"conv", "context"}


def test_remeasure_queues_a_second_job_for_the_noise_floor(farm: Farm):
    view = farm.campaign(small_configs(4), remeasure=1.0)
    assert view["jobs"] == 8


def test_bad_campaigns_are_4xx_with_a_message(farm: Farm):
    post = lambda body: farm.client.post("/v1/campaigns", json=body, headers=farm.team)  # noqa: E731
    both = post({"device_class": DEVICE_CLASS, "configs": small_configs(1), "space": {"kinds": {"conv": []}}})
    assert both.status_code == 422
    unknown = post({"device_class": DEVICE_CLASS, "configs": [{"kind": "warp", "h": 8, "w": 8}]})
    assert unknown.status_code == 422
    bad_runtime = post(
        {"device_class": DEVICE_CLASS, "configs": small_configs(1), "runtime": "onnxruntime/x"}
    )
    assert bad_runtime.status_code == 422 and "runtime" in str(bad_runtime.json()["detail"])
    if not tflite_available():
        tfl = post({"device_class": DEVICE_CLASS, "configs": small_configs(1), "runtime": "tflite"})
        assert tfl.status_code == 400 and "tflite" in tfl.json()["detail"]
    assert farm.client.get("/v1/campaigns/999", headers=farm.team).status_code == 404
    huge = {"kind": "mhsa", "cin": 4096, "heads": 8, "patch": 1, "cmid": 4096, "h": 2048, "w": 2048}
    r = post({"device_class": DEVICE_CLASS, "configs": [huge]})
    assert r.status_code == 400 and "GMACs" in r.json()["detail"]


def test_slow_export_answers_at_once_and_finishes_in_the_background(farm: Farm):
    r = farm.client.post(
        "/v1/campaigns",
        json={"device_class": DEVICE_CLASS, "configs": small_configs(5), "wait_s": 0},
        headers=farm.team,
    )
    assert r.status_code == 201
    campaign_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = farm.client.get(f"/v1/campaigns/{campaign_id}", headers=farm.team).json()
        if view["state"] != "exporting":
            break
        time.sleep(0.05)
    assert view["state"] == "running" and view["jobs"] == 5


def test_a_completed_campaign_refits_the_predictor_the_app_wired_in(farm: Farm):
    """create_app hands the predictor's refit to the campaign completion: reporting the last job of
    a campaign with enough configs starts a fit of its (device class, runtime), with no global
    lookup of the database or the service."""
    from profiler_server.predictor.fit import TrainSettings

    farm.client.app.state.predictor.settings = TrainSettings(hidden=16, max_epochs=20, patience=5)
    view = farm.campaign(small_configs(24, offset=200))
    reported = 0
    while (job := farm.lease()) is not None:
        assert farm.report(job, median=1.0 + 0.1 * reported).status_code == 200
        reported += 1
    assert reported == view["jobs"] == 24
    deadline = time.monotonic() + 60
    while not (rows := farm.client.get("/v1/predictors", params={"device_class": DEVICE_CLASS}).json()):
        assert time.monotonic() < deadline, "no fit started after the campaign completed"
        time.sleep(0.2)
    assert (rows[0]["runtime"], rows[0]["version"]) == ("onnxruntime/t1/cpu", 1)
    assert farm.client.get(f"/v1/campaigns/{view['id']}", headers=farm.team).json()["state"] == "done"
