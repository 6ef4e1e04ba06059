"""The farm at a glance: devices online, queue depth, pace, failures, predictors served."""

from __future__ import annotations

from fastapi import APIRouter

from profiler_server import farm_status
from profiler_server.deps import PrincipalDep, SessionDep
from profiler_server.openapi import ANY_TOKEN
from shared.api import FarmStatus

router = APIRouter(prefix="/v1", tags=["status"])


@router.get("/status", response_model=FarmStatus, responses=ANY_TOKEN)
def status(session: SessionDep, _: PrincipalDep) -> FarmStatus:
    """``jobs_per_minute``: jobs finished over the last 10 minutes; ``predictors``: (device class,
    runtime) pairs with a ready predictor."""
    return farm_status.farm_status(session)
