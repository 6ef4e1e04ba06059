"""App factory: ``create_app(settings)`` wires the database, routers, metrics and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from profiler_server import auth
from profiler_server.agent_process import AgentProcess
from profiler_server.cache import TTLCache
from profiler_server.campaigns import CampaignCompletion, Exporter, resume_exports
from profiler_server.dashboard import routes as dashboard
from profiler_server.db import Database, upgrade_database
from profiler_server.devices import reaper_loop
from profiler_server.errors import ServerError, data_error_message
from profiler_server.limits import BodyLimitMiddleware, SingleQueryValueMiddleware
from profiler_server.metrics import LatencyMiddleware, Metrics
from profiler_server.openapi import add_self_parsed_schemas
from profiler_server.predictor.hooks import on_campaign_complete
from profiler_server.predictor.service import PredictorService
from profiler_server.routes import (
    agents,
    artifacts,
    campaigns,
    health,
    jobs,
    measurements,
    predict_onnx,
    predictors,
    status,
    teams,
)
from profiler_server.settings import Settings
from shared.schemas import BadRuntime

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> tuple[Database, str | None]:
    """Connect, migrate to head, and make sure an admin token exists (returns a new one, if any)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    upgrade_database(db.engine)
    with db.transaction() as session:
        generated = auth.ensure_admin_token(session, settings.admin_token, settings.data_dir)
        for token in (settings.admin_token, settings.agent_token):
            if token and token.startswith("change-me"):
                log.warning("a default change-me token is in use: set RTSEG_ADMIN_TOKEN / RTSEG_AGENT_TOKEN")
        if settings.agent_token:
            auth.ensure_preshared_token(session, settings.agent_token, "agent", "agent (env)")
    return db, generated


# How long a thread holding the GIL runs before one waiting for it is let in (Python's default:
# 5 ms). Exports and fits run in threads of the server process; with the default, the event loop
# waited up to 5 ms for the GIL at each step of a request while an export traced a block.
GIL_SWITCH_S = 0.001


SUPERVISOR_PID_ENV = "RTSEG_SUPERVISOR_PID"  # set for worker processes (profiler-server --workers)


async def _stop_without_supervisor(supervisor: int) -> None:
    """A worker whose supervisor died (killed outright) shuts down as on SIGTERM instead of
    serving on alone; the supervisor would have stopped it."""
    while os.getppid() == supervisor:
        await asyncio.sleep(1.0)
    log.warning("the supervising profiler-server (pid %d) is gone; this worker stops", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    sys.setswitchinterval(GIL_SWITCH_S)  # set by each server process (workers build the app themselves)
    await asyncio.to_thread(app.state.agent_process.start)
    tasks = [asyncio.create_task(reaper_loop(app.state.db, app.state.settings, app.state.completion))]
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor:
        tasks.append(asyncio.create_task(_stop_without_supervisor(int(supervisor))))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        app.state.agent_process.close()
        app.state.exporter.shutdown()
        app.state.predictor.shutdown()
        app.state.db.dispose()


async def _server_error(_: Request, exc: ServerError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


async def _bad_runtime(_: Request, exc: BadRuntime) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _overflow_error(_: Request, exc: OverflowError) -> JSONResponse:
    # A path or query integer beyond the database's 64-bit range reached a query.
    return JSONResponse({"detail": f"number out of range: {exc}"}, status_code=422)


async def _data_error(_: Request, exc: DataError) -> JSONResponse:
    message = data_error_message(exc)
    if message is None:
        raise exc
    return JSONResponse({"detail": message}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db, generated = open_database(settings)
    # /docs is served by the dashboard from local Swagger UI assets (works offline); ReDoc would
    # need a CDN, so it is off.
    # FastAPI's OpenTelemetry bridge is off: /metrics (Prometheus) is the server's telemetry, and
    # the bridge asked OpenTelemetry for its three providers (reading the environment) per request.
    app = FastAPI(
        title="rtseg profiler server", version="0.1.0", lifespan=_lifespan, docs_url=None, redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )  # fmt: skip
    app.state.settings = settings
    app.state.db = db
    app.state.generated_admin_token = generated
    app.state.metrics = Metrics(db)
    app.state.token_cache = TTLCache(ttl_s=300)  # hash -> role and team (fixed); revocation is read per request
    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BadRuntime, _bad_runtime)
    app.add_exception_handler(OverflowError, _overflow_error)
    app.add_exception_handler(DataError, _data_error)
    app.state.predictor = PredictorService(db)
    # a completed campaign refits its (device class, runtime): the exporter, the lease and result
    # routes and the reaper all tell the predictor through this one object
    app.state.completion = CampaignCompletion(functools.partial(on_campaign_complete, app.state.predictor))
    # lease and result transactions (routes/jobs.py): group commits in a process of their own
    app.state.agent_process = AgentProcess(db, settings.lease_s, app.state.completion.fire, settings.agent_process)
    # Routers are matched in the order they are included, each route against the path in turn (a
    # third of a small request's CPU when /v1/predict came last): the hot paths come first.
    app.include_router(predictors.router)
    predictors.add_fast_predict_route(app)
    jobs.add_fast_agent_routes(app)
    for module in (jobs, health, teams, agents, campaigns, measurements, artifacts, status, predict_onnx):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    dashboard.mount_assets(app)
    add_self_parsed_schemas(app)
    app.add_middleware(
        BodyLimitMiddleware, json_limit=settings.max_json_bytes, upload_limit=settings.max_upload_bytes
    )
    app.add_middleware(SingleQueryValueMiddleware)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    app.state.exporter = Exporter(db, settings.artifacts_dir, app.state.completion, settings.export_workers)
    resume_exports(db, app.state.exporter)
    app.state.predictor.resume_fits()
    app.state.predictor.refit_stale_encodings()
    return app
