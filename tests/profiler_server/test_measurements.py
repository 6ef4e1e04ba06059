"""Measurement filters and exports: JSON rows with config + median_ms, CSV and Parquet."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from farm_helpers import Farm, small_configs


def _measure_all(farm: Farm, median: float) -> None:
    while (job := farm.lease()) is not None:
        assert farm.report(job, median=median).status_code == 200


def test_filters_and_raw_samples(farm: Farm):
    a = farm.campaign(small_configs(2))
    _measure_all(farm, 2.0)
    b = farm.campaign(small_configs(1, offset=50), runtime="onnxruntime/t2/cpu")
    _measure_all(farm, 3.0)
    get = lambda **p: farm.client.get("/v1/measurements", params=p, headers=farm.team).json()  # noqa: E731
    assert [r["median_ms"] for r in get(campaign_id=a["id"])] == [2.0, 2.0]
    assert [r["median_ms"] for r in get(campaign_id=b["id"])] == [3.0]
    assert len(get(runtime="onnxruntime")) == 2  # bare name = default settings key onnxruntime/t1/cpu
    assert len(get(runtime="onnxruntime/t2/cpu")) == 1
    assert len(get(kind="conv")) == 3 and get(kind="mhsa") == []
    assert get(device_class="SM-nothing") == []
    row = get(campaign_id=a["id"])[0]
    assert (
        row["config"]["kind"] == "conv"
        and row["samples_ms"] == [2.0, 2.0, 2.2]
        and row["tool"] == "synthetic"
    )
    assert "samples_ms" not in farm.client.get("/v1/measurements", params={"samples": False}, headers=farm.team).json()[0]
    assert farm.client.get("/v1/measurements", params={"campaign_id": 999}, headers=farm.team).status_code == 404
    assert farm.client.get("/v1/measurements", params={"runtime": "x/y"}, headers=farm.team).status_code == 422


def test_csv_and_parquet_round_trip(farm: Farm):
    farm.campaign(small_configs(3))
    _measure_all(farm, 1.5)
    csv = pd.read_csv(io.StringIO(farm.client.get("/v1/measurements.csv", headers=farm.team).text))
    parquet = pd.read_parquet(io.BytesIO(farm.client.get("/v1/measurements.parquet", headers=farm.team).content))
    for frame in (csv, parquet):
        assert len(frame) == 3 and list(frame["median_ms"]) == [1.5] * 3
        assert sorted(frame["cfg_cout"]) == [4, 5, 6]
        assert json.loads(frame["config"][0])["kind"] == "conv"
        assert json.loads(frame["samples_ms"][0]) == pytest.approx([1.5, 1.5, 1.65])


def test_a_query_parameter_given_twice_is_422_naming_it(farm: Farm):
    resp = farm.client.get("/v1/measurements?kind=conv&kind=lir&limit=5", headers=farm.team)
    assert resp.status_code == 422
    assert [e["loc"] for e in resp.json()["detail"]] == [["query", "kind"]]
    assert farm.client.get("/v1/measurements?kind=conv&limit=5", headers=farm.team).status_code == 200
