"""Kernel campaigns, the kernel predictor and ``POST /v1/predict/onnx``, on a real app and SQLite.

The agent here reports latencies from a known cost formula, so the test can tell whether the
fitted kernel predictor learned it (a wrong label correction or fit fails the accuracy check)."""

from __future__ import annotations

import onnx
import pytest
from farm_helpers import ADMIN, bearer, make_settings, register_agent
from fastapi.testclient import TestClient

from profiler_server.app import create_app
from profiler_server.db import Artifact
from profiler_server.predictor import store
from shared.kernel_space import sample_kernels
from shared.kernels import KernelConfig, kernel_costs
from testkit.onnx_models import classifier_onnx

DC = "Pixel-T/testboard"  # a phone class: decomposed at onnxruntime's extended level (no NCHWc)


def formula_ms(cfg: KernelConfig) -> float:
    ops, inp, out, weights = kernel_costs(cfg)
    return 0.02 + 2e-6 * ops + 1e-6 * (inp + out + weights)


def _model(dynamic: bool = False, only_unsupported: bool = False) -> bytes:
    return classifier_onnx(["N", 3, "H", "W"] if dynamic else [1, 3, 32, 32], only_unsupported=only_unsupported)


def _predict(client: TestClient, headers: dict, data: bytes, **form) -> object:
    files = {"file": ("m.onnx", data, "application/octet-stream")}
    return client.post("/v1/predict/onnx", files=files, data={"device_class": DC, **form}, headers=headers)


@pytest.fixture
def kernel_farm(client: TestClient):
    admin = bearer(ADMIN)
    team = bearer(client.post("/v1/teams", json={"name": "lab"}, headers=admin).json()["token"])
    agent = bearer(client.post("/v1/tokens", json={"role": "agent", "name": "a"}, headers=admin).json()["token"])
    agent_id = register_agent(client, agent, ["ph-1"], device_class=DC)
    configs = [c.model_dump(mode="json") for c in sample_kernels(90, seed=1, reorders=False)]
    r = client.post("/v1/campaigns", json={"device_class": DC, "configs": configs, "runs": 3}, headers=team)
    assert r.status_code == 201, r.text
    for _ in range(200):  # bounded: one lease per queued job
        job = client.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": "ph-1"}, headers=agent).json()["job"]
        if job is None:
            break
        with client.app.state.db.sessionmaker() as s:  # the device "runs" the artifact's kernel
            config = s.get(Artifact, job["artifact_sha256"]).config
        ms = formula_ms(KernelConfig.model_validate(config))
        stats = {"median_ms": ms, "mean_ms": ms, "p10_ms": ms, "p90_ms": ms, "std_ms": 0.0, "runs": 3,
                 "samples_ms": [ms] * 3, "tool": "formula"}
        body = {"lease_id": job["lease_id"], "serial": "ph-1", "stats": stats}
        assert client.post(f"/v1/jobs/{job['job_id']}/result", json=body, headers=agent).status_code == 200
    return team


def test_without_a_kernel_predictor_the_answer_names_the_campaign_to_run(farm) -> None:
    r = _predict(farm.client, farm.team, _model())
    assert r.status_code == 404
    assert "no kernel predictor" in r.json()["detail"] and '"family": "kernels"' in r.json()["detail"]
    r = farm.client.post("/v1/kernel-predictors", json={"device_class": DC}, headers=farm.team)
    assert r.status_code == 409 and "kernel campaign" in r.json()["detail"]


def test_kernel_predictor_learns_the_device_and_predicts_a_whole_model(client, kernel_farm) -> None:
    r = client.post("/v1/kernel-predictors", json={"device_class": DC}, headers=kernel_farm)
    assert r.status_code == 201, r.text
    fitted = r.json()
    assert fitted["runtime"] == "kernels:onnxruntime/t1/cpu" and fitted["metrics"]["overhead_measured"]
    assert fitted["metrics"]["kinds"]["conv"]["n"] > 5
    with client.app.state.db.sessionmaker() as s:  # kernels never enter the block predictor's data
        assert store.count_distinct_configs(s, DC, "onnxruntime/t1/cpu") == 0

    r = _predict(client, kernel_farm, _model())
    assert r.status_code == 200, r.text
    ans = r.json()
    assert [k["kind"] for k in ans["kernels"]] == ["conv", "global_pool", "matmul"]
    assert ans["kernels"][0]["nodes"] == ["stem", "stem_relu"] and ans["kernels"][0]["runtime_op"] == "FusedConv"
    assert "classifier" in ans["kernels"][2]["nodes"]
    assert ans["kernels"][0]["fn"] == "Relu" and ans["kernels"][0]["dims"]["cout"] == 16
    assert [u["op_type"] for u in ans["unsupported"]] == ["CumSum"]
    assert ans["total_ms"] == pytest.approx(ans["overhead_ms"] + sum(k["predicted_ms"] for k in ans["kernels"]))
    assert ans["error_ms"] > 0 and ans["predictor"]["version"] == fitted["version"]
    for k in ans["kernels"]:  # the fit learned the device's cost formula
        cfg = KernelConfig(op=k["kind"], fn=k["fn"], dims=tuple(k["dims"].values()))
        assert k["predicted_ms"] == pytest.approx(formula_ms(cfg) - 0.02, rel=0.25), k
    assert ans["overhead_ms"] == pytest.approx(formula_ms(KernelConfig(op="overhead")))


def test_predict_onnx_refuses_bad_models_with_what_to_fix(client, kernel_farm) -> None:
    assert client.post("/v1/kernel-predictors", json={"device_class": DC}, headers=kernel_farm).status_code == 201
    r = _predict(client, kernel_farm, b"\x08\x07 not a model")
    assert r.status_code == 400 and "not an ONNX model" in r.json()["detail"]
    r = _predict(client, kernel_farm, _model(dynamic=True))
    assert r.status_code == 400 and "dynamic shape" in r.json()["detail"] and "1x3x512x1024" in r.json()["detail"]
    r = _predict(client, kernel_farm, _model(dynamic=True), input_shape="1x3x64x64")
    assert r.status_code == 200 and r.json()["kernels"][0]["dims"]["h"] == 64
    r = _predict(client, kernel_farm, _model(dynamic=True), input_shape="big")
    assert r.status_code == 400 and "1x3x512x1024" in r.json()["detail"]
    r = _predict(client, kernel_farm, _model(only_unsupported=True), input_shape="1x3x8x8")
    assert r.status_code == 400 and "no known kernel" in r.json()["detail"] and "CumSum" in r.json()["detail"]
    r = _predict(client, kernel_farm, _model(), runtime="tflite")
    assert r.status_code == 404 and "kernel campaign" in r.json()["detail"]


def test_oversize_model_is_413(tmp_path) -> None:
    with TestClient(create_app(make_settings(tmp_path, max_upload_bytes=1000))) as c:
        r = _predict(c, bearer(ADMIN), _model() + b"\0" * 100_000)
        assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_kernel_family_campaign_samples_one_kernel_models(farm) -> None:
    r = farm.client.post("/v1/campaigns", json={"device_class": DC, "family": "kernels", "n": 25, "seed": 3},
                         headers=farm.team)
    assert r.status_code == 201, r.text
    assert r.json()["n"] == 25 and r.json()["sampling"] == "kernels"
    job = farm.client.get("/v1/measurements", headers=farm.team)
    assert job.status_code == 200
    r = farm.client.post("/v1/campaigns", json={"device_class": DC, "family": "kernels", "n": 5,
                                                 "runtime": "tflite"}, headers=farm.team)
    assert r.status_code == 400
    bad = {"kind": "kernel", "op": "conv", "fn": "Relu", "dims": [3, 8, 8, 8, 3, 1, 1]}
    r = farm.client.post("/v1/campaigns", json={"device_class": DC, "configs": [bad]}, headers=farm.team)
    assert r.status_code == 422 and "takes dims" in r.text


def test_network_level_calibration_scales_kernels_to_measured_models() -> None:
    from profiler_server.predictor.kernel_predictor import calibrate, fit_kernel_predictor
    from shared.kernels import decompose

    configs = sample_kernels(90, seed=1, reorders=False)
    predictor = fit_kernel_predictor(configs, [formula_ms(c) for c in configs], level="extended")
    models = [_model(dynamic=True)]
    shapes = [[1, 3, 16 * (i + 1), 16 * (i + 1)] for i in range(6)]
    raw = [predictor.predict(decompose(models[0], s))["total_ms"] for s in shapes]
    fixed = []  # the same model at fixed sizes, "measured" 30 % slower than its kernels add up to
    for s in shapes:
        m = onnx.load_from_string(models[0])
        for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, s, strict=True):
            d.dim_value = v
        fixed.append(m.SerializeToString())
    measured = [predictor.overhead_ms + 1.3 * (t - predictor.overhead_ms) for t in raw]
    info = calibrate(predictor, fixed, measured)
    assert info["n"] == 0  # CumSum is no kernel: a model with unsupported ops cannot calibrate
    info = calibrate(predictor, [_strip_cumsum(b) for b in fixed], measured)
    assert info["n"] == 6 and info["scale"] == pytest.approx(1.3, rel=0.02)
    assert info["mape_after"] < 2 < info["mape_before"]


def _strip_cumsum(data: bytes) -> bytes:
    m = onnx.load_from_string(data)
    keep = [n for n in m.graph.node if n.op_type != "CumSum"]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.output[0].name = "l"
    return m.SerializeToString()
