"""The predictor over HTTP: fit, list, predict, weights round trip, clear 4xx answers."""

from __future__ import annotations

import pytest
import torch
from predictor_data import AUTH, DEVICE_CLASS, P10_SHARE, RUNTIME, store_measurements, synthetic_blocks

from shared.encoding import encode_blocks
from shared.predictor import load_predictor

IN_RANGE = {"kind": "conv", "cin": 16, "cout": 32, "kernel": 3, "stride": 1, "h": 16, "w": 16}
WIDE = {"kind": "conv", "cin": 512, "cout": 512, "kernel": 3, "stride": 1, "h": 128, "w": 128}
MHSA = {"kind": "mhsa", "cin": 32, "heads": 2, "patch": 2, "cmid": 64, "h": 16, "w": 16}


def test_listing_shows_metrics_and_peers(app_client, fitted):
    rows = app_client.get("/v1/predictors", params={"device_class": DEVICE_CLASS, "runtime": "onnxruntime"}).json()
    assert [r["id"] for r in rows] == [fitted["id"]]
    m = rows[0]["metrics"]
    assert rows[0]["runtime"] == RUNTIME and rows[0]["version"] == 1
    assert {"mape", "within_10", "within_5", "n_train", "n_test", "rmspe", "spearman", "p95_error"} <= m.keys()
    assert m["n_test"] > 0 and m["n_train"] > m["n_test"]
    assert set(m["peers"]) == {"linear_macs", "random_forest", "lookup_table"}
    assert m["mape"] < 15  # smooth synthetic latency: the MLP must have learned it


def test_weights_round_trip_gives_identical_numbers(app_client, fitted):
    r = app_client.get(f"/v1/predictors/{fitted['id']}/weights")
    assert r.status_code == 200
    assert r.headers["X-Predictor-Version"] == "1"
    local = load_predictor(r.content)
    assert local.meta["device_class"] == DEVICE_CLASS and local.meta["version"] == 1
    blocks = [IN_RANGE, WIDE] + [c.model_dump() for c in synthetic_blocks(20, seed=5)]
    answer = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "runtime": RUNTIME,
                                                  "blocks": blocks}).json()
    with torch.no_grad():
        mine = local.model(encode_blocks(blocks)).double().tolist()
    assert answer["block_ms"] == mine  # bit-identical, not approximately equal
    assert answer["total_ms"] == sum(mine)
    assert answer["predictor"] == {"id": fitted["id"], "version": 1}


def test_weights_etag_answers_304(app_client, fitted):
    first = app_client.get(f"/v1/predictors/{fitted['id']}/weights")
    again = app_client.get(f"/v1/predictors/{fitted['id']}/weights", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    other = app_client.get(f"/v1/predictors/{fitted['id']}/weights", headers={"If-None-Match": '"abc"'})
    assert other.status_code == 200 and other.content == first.content


def test_extrapolated_flags_blocks_outside_the_trained_ranges(app_client, fitted):
    r = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [IN_RANGE, WIDE, MHSA]})
    assert r.status_code == 200, r.text
    assert r.json()["extrapolated"] == [False, True, True]  # too wide; a kind never measured


def test_unknown_device_class_or_runtime_is_404_naming_what_exists(app_client, fitted):
    r = app_client.post("/v1/predict", json={"device_class": "Pixel-9/tensor", "blocks": [IN_RANGE]})
    assert r.status_code == 404
    assert DEVICE_CLASS in r.json()["detail"]
    r = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "runtime": "tflite", "blocks": [IN_RANGE]})
    assert r.status_code == 404
    assert RUNTIME in r.json()["detail"]
    r = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [IN_RANGE], "predictor_version": 9})
    assert r.status_code == 404 and "version 9" in r.json()["detail"]


def test_bad_blocks_are_422(app_client, fitted):
    for blocks in ([{"kind": "warp", "h": 8, "w": 8}], [{**IN_RANGE, "kernel": 4}], [{**IN_RANGE, "cin": -3}], []):
        r = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": blocks})
        assert r.status_code == 422, (blocks, r.text)


def test_a_body_that_is_not_json_gets_the_same_422_as_on_fastapis_routes(app_client):
    """/v1/predict reads its own body; its errors have the shapes FastAPI's routes answer with."""
    headers = {"content-type": "application/json"}
    for raw, loc in ((b'{"device_class": ', ["body", 17]), (b"", ["body"])):
        predict = app_client.post("/v1/predict", content=raw, headers=headers)
        teams = app_client.post("/v1/teams", content=raw, headers={**headers, **AUTH})
        assert predict.status_code == teams.status_code == 422, predict.text
        assert predict.json()["detail"][0]["loc"] == teams.json()["detail"][0]["loc"] == loc


def test_new_version_is_served_and_old_one_can_be_pinned(app_client, fitted):
    db = app_client.app.state.db
    before = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [IN_RANGE]}).json()
    store_measurements(db, DEVICE_CLASS, RUNTIME, synthetic_blocks(40, seed=9), seed=9)
    r = app_client.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "runtime": RUNTIME}, headers=AUTH)
    app_client.app.state.predictor.wait(r.json()["id"], timeout=120)
    latest = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [IN_RANGE]}).json()
    assert latest["predictor"]["version"] == 2
    pinned = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [IN_RANGE],
                                                  "predictor_version": 1}).json()
    assert pinned == before
    assert [row["version"] for row in app_client.get("/v1/predictors").json()] == [1, 2]


def test_fit_needs_a_token_and_enough_measurements(app_client):
    body = {"device_class": DEVICE_CLASS, "runtime": "onnxruntime"}
    assert app_client.post("/v1/predictors", json=body).status_code == 401
    r = app_client.post("/v1/predictors", json=body, headers=AUTH)
    assert r.status_code == 409 and "at least" in r.json()["detail"]
    r = app_client.post("/v1/predictors", json={**body, "runtime": "caffe"}, headers=AUTH)
    assert r.status_code in (400, 422)
    assert app_client.get("/v1/predictors/77/weights").status_code == 404


def test_campaign_completion_hook_fits_when_there_is_enough_data(app_client):
    from profiler_server.predictor.hooks import on_campaign_complete

    assert on_campaign_complete(app_client.app.state.predictor, 1, DEVICE_CLASS, "onnxruntime") is None  # nothing measured yet
    db = app_client.app.state.db
    store_measurements(db, DEVICE_CLASS, RUNTIME, synthetic_blocks(60))
    predictor_id = on_campaign_complete(app_client.app.state.predictor, 1, DEVICE_CLASS, "onnxruntime")
    app_client.app.state.predictor.wait(predictor_id, timeout=120)
    row = app_client.get(f"/v1/predictors/{predictor_id}").json()
    assert row["state"] == "ready" and row["runtime"] == RUNTIME and row["n_test"] > 0
    assert set(row["feature_ranges"]) == {"conv", "lir"}


def test_huge_blocks_and_ids_get_answers_not_errors(app_client, fitted):
    giant = {"kind": "conv", "cin": 4096, "cout": 4096, "kernel": 11, "stride": 1, "h": 2048, "w": 2048}
    r = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [giant]})
    assert r.status_code == 200 and r.json()["extrapolated"] == [True]
    assert app_client.get(f"/v1/predictors/{2**63}").status_code == 422


def test_fit_learns_p10_by_default_and_the_median_when_asked(app_client, fitted):
    assert fitted["metrics"]["statistic"] == "p10_ms"
    r = app_client.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "runtime": RUNTIME,
                                               "statistic": "median_ms"}, headers=AUTH)
    assert r.status_code == 202, r.text
    app_client.app.state.predictor.wait(r.json()["id"], timeout=120)
    assert app_client.get(f"/v1/predictors/{r.json()['id']}").json()["metrics"]["statistic"] == "median_ms"
    body = {"device_class": DEVICE_CLASS, "blocks": [IN_RANGE]}
    p10 = app_client.post("/v1/predict", json={**body, "predictor_version": 1}).json()["total_ms"]
    median = app_client.post("/v1/predict", json={**body, "predictor_version": 2}).json()["total_ms"]
    assert median / p10 == pytest.approx(1 / P10_SHARE, rel=0.1)
    bad = app_client.post("/v1/predictors", json={"device_class": DEVICE_CLASS, "statistic": "max_ms"}, headers=AUTH)
    assert bad.status_code == 422 and "statistic" in bad.text


def test_an_mhsa_with_more_tokens_than_trained_is_extrapolated_though_each_field_is_in_range(app_client):
    from shared.config import MHSAConfig

    trained = [MHSAConfig(cin=32, heads=2, patch=p, cmid=cmid, h=h, w=w)
               for h in (8, 16, 32) for w in (8, 16, 32) for p in (1, 2, 4) for cmid in (32, 64)
               if h % p == 0 and w % p == 0 and h * w // (p * p) <= 256]  # fmt: skip
    store_measurements(app_client.app.state.db, "host/mhsa-cpu", RUNTIME, trained)
    r = app_client.post("/v1/predictors", json={"device_class": "host/mhsa-cpu", "runtime": RUNTIME}, headers=AUTH)
    assert r.status_code == 202, r.text
    app_client.app.state.predictor.wait(r.json()["id"], timeout=120)
    blocks = [{**MHSA, "h": 32, "w": 32, "patch": 2}, {**MHSA, "h": 32, "w": 32, "patch": 1}]  # 256, 1,024 tokens
    answer = app_client.post("/v1/predict", json={"device_class": "host/mhsa-cpu", "blocks": blocks}).json()
    assert answer["extrapolated"] == [False, True]


def test_a_repeated_small_body_is_answered_as_if_parsed_and_predicted_afresh(app_client, fitted):
    """Small bodies are parsed once and their answers remembered per version: the answer must equal
    the one for the same block inside a large body (which takes the full path every time)."""
    body = {"device_class": DEVICE_CLASS, "blocks": [IN_RANGE]}
    first, again = (app_client.post("/v1/predict", json=body).json() for _ in range(2))
    filler = [{**IN_RANGE, "cout": 8 + i} for i in range(40)]  # > 2 KB of JSON
    large = app_client.post("/v1/predict", json={"device_class": DEVICE_CLASS, "blocks": [*filler, IN_RANGE]}).json()
    assert first == again
    # equal up to float rounding: torch sums a batch of 1 and a batch of 41 in different orders
    assert first["block_ms"] == pytest.approx([large["block_ms"][-1]], rel=1e-6)
    assert first["extrapolated"] == [large["extrapolated"][-1]]
    bad = {"device_class": DEVICE_CLASS, "blocks": [{**IN_RANGE, "kernel": 4}]}
    assert [app_client.post("/v1/predict", json=bad).status_code for _ in range(2)] == [422, 422]  # never cached


def test_the_fast_predict_route_keeps_the_documented_contract(app_client, fitted):
    """POST /v1/predict bypasses FastAPI's route machinery; its errors and its OpenAPI entry do not change."""
    wrong_method = app_client.get("/v1/predict")
    assert wrong_method.status_code == 405 and wrong_method.json() == {"detail": "Method Not Allowed"}
    not_json = app_client.post("/v1/predict", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["detail"][0]["loc"][0] == "body"
    operation = app_client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    assert {"200", "404", "422"} <= set(operation["responses"])
