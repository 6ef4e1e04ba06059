"""Measurements (any token): lab-wide block rows, network rows of the token's own team only;
JSON rows, CSV and Parquet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from profiler_server import measurements
from profiler_server.deps import PrincipalDep, SessionDep
from profiler_server.openapi import ANY_TOKEN, INVALID, MISSING
from shared.api import MeasurementFilter, MeasurementRow

router = APIRouter(prefix="/v1", tags=["measurements"])
Filter = Annotated[MeasurementFilter, Query()]


# exclude_unset: ``samples_ms`` is left out of each row unless asked for (``samples=true``)
@router.get("/measurements", response_model=list[MeasurementRow], response_model_exclude_unset=True,
            responses=ANY_TOKEN | MISSING | INVALID)
def list_measurements(session: SessionDep, principal: PrincipalDep, f: Filter) -> list[MeasurementRow]:
    return measurements.list_measurements(session, f, principal)


@router.get(
    "/measurements.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "one row per measurement"}}
    | ANY_TOKEN | MISSING | INVALID,
)
def measurements_csv(session: SessionDep, principal: PrincipalDep, f: Filter) -> Response:
    body = measurements.to_csv(measurements.list_measurements(session, f, principal, samples=True))
    return Response(body, media_type="text/csv")


@router.get(
    "/measurements.parquet",
    response_class=Response,
    responses={200: {"content": {"application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "one row per measurement"}} | ANY_TOKEN | MISSING | INVALID,
)
def measurements_parquet(session: SessionDep, principal: PrincipalDep, f: Filter) -> Response:
    body = measurements.to_parquet(measurements.list_measurements(session, f, principal, samples=True))
    return Response(body, media_type="application/vnd.apache.parquet")
