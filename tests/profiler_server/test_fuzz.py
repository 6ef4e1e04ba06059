"""Hostile input: schemathesis fuzzes every operation of the OpenAPI schema with the admin token
(so bodies get past auth into the logic); nothing may answer 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from farm_helpers import ADMIN, bearer, make_settings
from hypothesis import HealthCheck, settings

from profiler_server.app import create_app

pytestmark = pytest.mark.slow


def _app():
    # Small limits keep accepted campaigns cheap to export within the time budget.
    data = Path(tempfile.mkdtemp(prefix="rtseg-fuzz-"))
    return create_app(
        make_settings(data, max_campaign_configs=8, max_block_gmacs=0.01, max_upload_bytes=4096)
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_5xx(case):
    response = case.call(headers=bearer(ADMIN))
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert "detail" in response.json(), "every error carries a message"
