"""Liveness, readiness (database reachable) and Prometheus metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared.api import ErrorBody, Ok

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=Ok)
def livez() -> Ok:
    return Ok()


@router.get("/readyz", response_model=Ok,
            responses={503: {"model": ErrorBody, "description": "the database is unreachable"}})
def readyz(request: Request) -> JSONResponse:
    try:
        with request.app.state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse({"ok": False, "detail": f"database unreachable: {exc}"}, status_code=503)
    return JSONResponse({"ok": True, "pid": os.getpid()})  # which server process answered (--workers)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text exposition format"}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
