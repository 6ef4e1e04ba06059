"""The OpenAPI document tells the truth about errors: every operation lists the 4xx it can answer,
each with the error body model (generic over the document, so routes added later are covered).
The status codes actually answered are checked against these lists by the schemathesis run in
test_fuzz.py, once with a token of each role."""

from __future__ import annotations

import pytest
from farm_helpers import ADMIN, bearer
from fastapi.testclient import TestClient

from shared.api import ErrorBody

ERROR_REF = f"#/components/schemas/{ErrorBody.__name__}"


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from farm_helpers import make_settings

    from profiler_server.app import create_app

    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("openapi")))) as client:
        return client.get("/openapi.json").json()


def operations(document: dict) -> list[tuple[str, dict]]:
    methods = ("get", "post", "put", "patch", "delete")
    return [
        (f"{method.upper()} {path}", op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in methods
    ]


def required_errors(op: dict) -> set[int]:
    """The 4xx that an operation's own shape makes possible."""
    params = op.get("parameters", [])
    codes: set[int] = set()
    if op.get("security"):
        codes.add(401)  # a missing or unknown token
    if params or "requestBody" in op:
        codes.add(422)  # a value outside the schema
    if "requestBody" in op:
        codes.add(413)  # a body over the server's limit
    if any(p["in"] == "path" for p in params):
        codes.add(404)  # a path naming something that does not exist
    return codes


def test_every_operation_declares_the_errors_its_shape_allows(document):
    missing = {
        name: sorted(required_errors(op) - {int(c) for c in op["responses"]})
        for name, op in operations(document)
    }
    assert not {k: v for k, v in missing.items() if v}, missing
    assert len(missing) >= 20  # the whole API was looked at


def test_every_declared_error_has_the_error_body_model(document):
    wrong = []
    for name, op in operations(document):
        for code, response in op["responses"].items():
            if code.startswith("4"):
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref") != ERROR_REF:
                    wrong.append(f"{name} {code}: {schema}")
    assert not wrong, wrong


def test_secured_operations_say_so(document):
    ops = dict(operations(document))
    assert ops["POST /v1/jobs/lease"].get("security"), "the agent protocol needs a token"
    assert {"401", "403"} <= set(ops["POST /v1/jobs/lease"]["responses"])
    assert ops["GET /v1/measurements"].get("security"), "measurements need a token (a team sees its own networks)"


def test_metrics_is_documented_as_text(document):
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


def test_self_parsed_predict_body_is_documented(document):
    body = document["paths"]["/v1/predict"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["required"] and {"device_class", "blocks"} <= set(schema["required"])
    assert schema["properties"]["runtime"]["pattern"].startswith("^(onnxruntime|tflite)")


def test_schema_states_runtime_and_device_field_types(client):
    """A schema-valid runtime is accepted and an empty one is refused by the schema (422 naming
    the field); a boolean where the schema wants an integer is refused, not read as 0."""
    body = {"device_class": "host/x", "runtime": "", "blocks": [{"kind": "conv", "cin": 3, "cout": 4, "h": 8, "w": 8}]}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "runtime"]
    r = client.post("/v1/predict", json={**body, "runtime": "onnxruntime/t4/xnnpack"})
    assert r.status_code == 404  # schema-valid: no predictor for this class, not a 4xx about the input
    admin = bearer(ADMIN)
    token = client.post("/v1/tokens", json={"role": "agent"}, headers=admin).json()["token"]
    device = {"serial": "s1", "device_class": "host/x", "kind": "host", "thermal_zones": False}
    r = client.post("/v1/agents", json={"name": "a", "devices": [device]}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422 and "thermal_zones" in str(r.json()["detail"])


def success_schema(op: dict) -> tuple[str, dict] | None:
    """The 2xx answer's media type and schema, or None when the document gives none."""
    for code, response in op["responses"].items():
        if code.startswith("2"):
            for media, content in response.get("content", {}).items():
                if content.get("schema"):
                    return media, content["schema"]
    return None


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_operation_documents_its_success_answer(document):
    """Each 2xx has a schema: JSON answers a named model (or a list of one), never the empty
    schema FastAPI writes for a route without ``response_model``. Byte and text answers (artifact,
    weights, CSV, Parquet, ``/metrics`` in Prometheus text) state their media type and a string."""
    missing, untyped = [], []
    for name, op in operations(document):
        found = success_schema(op)
        if found is None:
            missing.append(name)
            continue
        media, schema = found
        if media == "application/json":
            item = resolve(document, schema.get("items", schema))
            if "properties" not in item:
                untyped.append(f"{name}: {schema}")
        elif schema.get("type") != "string":
            untyped.append(f"{name} ({media}): {schema}")
    assert not missing, f"no 2xx schema: {missing}"
    assert not untyped, f"2xx without a model: {untyped}"
    assert len(operations(document)) >= 30


def test_listing_and_view_models_name_their_fields(document):
    """The answers clients index into document the fields they read."""
    ops = dict(operations(document))
    campaign = resolve(document, success_schema(ops["GET /v1/campaigns/{campaign_id}"])[1])
    assert {"id", "state", "queued", "done", "eta_s", "team"} <= set(campaign["properties"])
    page = resolve(document, success_schema(ops["GET /v1/jobs"])[1])
    assert {"items", "total", "limit", "offset"} <= set(page["properties"])
    device = resolve(document, success_schema(ops["GET /v1/devices/{serial}"])[1])
    assert {"temperature_c", "current_job", "measured_today"} <= set(device["properties"])
    onnx = resolve(document, success_schema(ops["POST /v1/predict/onnx"])[1])
    assert {"total_ms", "kernels", "unsupported"} <= set(onnx["properties"])
