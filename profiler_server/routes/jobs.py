"""The agent protocol (lease, result, failure, release) and job status."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.responses import Response

from profiler_server import devices, jobs, listings
from profiler_server.auth import Principal, authenticate, require_role
from profiler_server.cancel import cancel_job
from profiler_server.db import Job
from profiler_server.deps import AgentDep, Credentials, PrincipalDep, SessionDep, TeamDep
from profiler_server.errors import NotFound, ServerError
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses
from profiler_server.routes.fast_json import NamedRoute, bearer_token, parse_request
from shared.api import (
    FailureRecorded,
    JobFailure,
    JobFilter,
    JobLease,
    JobRelease,
    JobReleased,
    JobResult,
    JobView,
    LeaseRequest,
    LeaseResponse,
    Page,
    ResultRecorded,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Path(ge=1, le=2**62)


# The two hottest endpoints are async and hand their whole transaction to the app's group commit
# (one thread; the leases and results that arrive together share one commit, each in its own
# savepoint): sync dependencies would each cost a worker-thread hop of their own.
@router.post("/lease", response_model=LeaseResponse, responses=AUTH | BODY | error_responses(404, 409))
async def lease(body: LeaseRequest, request: Request, creds: Credentials) -> LeaseResponse:
    return await request.app.state.group_commit.run(partial(_lease, request.app, _token(creds), body))


def _lease(app: FastAPI, token: str | None, body: LeaseRequest, session: Session) -> LeaseResponse:
    principal = require_role(authenticate(session, token, app.state.token_cache, commit_touch=False), "agent")
    return LeaseResponse(job=_lease_for(app, session, principal, body.agent_id, body.serial))


def _lease_for(app: FastAPI, session: Session, principal: Principal, agent_id: str, serial: str) -> JobLease | None:
    cache = app.state.device_cache
    device_class = devices.agent_device(session, principal, agent_id, serial, cache)
    # leasing requeues expired jobs, which may complete a campaign: the group commit fires its hooks
    return jobs.lease_job(session, serial, device_class, app.state.settings.lease_s, agent_id)


@router.post("/{job_id}/result", response_model=ResultRecorded, responses=AUTH | BODY | error_responses(404, 409))
async def result(body: JobResult, request: Request, creds: Credentials, job_id: int = JobId) -> ResultRecorded:
    return await request.app.state.group_commit.run(partial(_result, request.app, _token(creds), job_id, body))


def _result(app: FastAPI, token: str | None, job_id: int, body: JobResult, session: Session) -> ResultRecorded:
    principal = require_role(authenticate(session, token, app.state.token_cache, commit_touch=False), "agent")
    measurement_id, _ = jobs.record_result(session, job_id, body)
    if not body.lease_next:
        return ResultRecorded(measurement_id=measurement_id)
    try:  # the agent's next job in the same transaction; a refused lease does not undo the result
        next_job = _lease_for(app, session, principal, body.agent_id, body.serial)
    except ServerError as exc:
        return ResultRecorded(measurement_id=measurement_id, next_error=exc.message)
    return ResultRecorded(measurement_id=measurement_id, next_job=next_job)


def _token(creds: HTTPAuthorizationCredentials | None) -> str | None:
    return creds.credentials if creds else None


async def lease_fast(request: Request) -> Response:
    body, _ = await parse_request(request, LeaseRequest)
    work = partial(_lease, request.app, bearer_token(request), body)
    return _json(await request.app.state.group_commit.run(work))


async def result_fast(request: Request) -> Response:
    body, job_id = await parse_request(request, JobResult, path_row_id="job_id")
    work = partial(_result, request.app, bearer_token(request), job_id, body)
    return _json(await request.app.state.group_commit.run(work))


def _json(answer: BaseModel) -> Response:
    return Response(answer.model_dump_json(), media_type="application/json")


def add_fast_agent_routes(app: FastAPI) -> None:
    """Serve the agents' lease and result calls through plain Starlette routes matched before
    FastAPI's (which stay in place for the OpenAPI document): FastAPI's per-request machinery
    cost more than the transaction itself. Same checks, status codes and bodies."""
    app.router.routes[0:0] = [
        NamedRoute("/v1/jobs/lease", lease_fast, methods=["POST"], name="lease"),
        NamedRoute("/v1/jobs/{job_id}/result", result_fast, methods=["POST"], name="result"),
    ]


@router.post("/{job_id}/failure", response_model=FailureRecorded, responses=AUTH | BODY | error_responses(404, 409))
def failure(
    body: JobFailure, request: Request, session: SessionDep, principal: AgentDep, job_id: int = JobId
) -> FailureRecorded:
    job, _ = jobs.record_failure(session, principal, job_id, body)
    session.commit()
    request.app.state.completion.fire_pending(session)
    return FailureRecorded(state=job.state, attempts=job.attempts, error=job.error)


@router.post("/{job_id}/release", response_model=JobReleased, responses=AUTH | BODY | error_responses(404, 409))
def release(body: JobRelease, session: SessionDep, principal: AgentDep, job_id: int = JobId) -> JobReleased:
    job = jobs.release_job(session, principal, job_id, body)
    session.commit()
    return JobReleased(state=job.state)


@router.get("", response_model=Page[JobView], responses=AUTH | INVALID)
def list_jobs(
    session: SessionDep, principal: PrincipalDep, f: Annotated[JobFilter, Query()]
) -> Page[JobView]:
    """Jobs, newest first: a team token sees its own, the admin all."""
    return listings.list_jobs(session, principal, f)


@router.get("/{job_id}", response_model=JobView, responses=ANY_TOKEN | MISSING | INVALID)
def get_job(session: SessionDep, principal: PrincipalDep, job_id: int = JobId) -> JobView:
    job = session.get(Job, job_id)
    visible = principal.role in ("admin", "agent") or (job is not None and job.team_id == principal.team_id)
    if job is None or not visible:
        raise NotFound(f"job {job_id} does not exist or belongs to another team")
    return listings.job_views(session, [job])[0]


@router.post("/{job_id}/cancel", response_model=JobView, responses=AUTH | MISSING | INVALID | error_responses(409))
def cancel(session: SessionDep, principal: TeamDep, job_id: int = JobId) -> JobView:
    """Take a queued job that belongs to no campaign (a network upload) out of the queue."""
    job = cancel_job(session, principal, job_id)
    session.commit()
    return listings.job_views(session, [job])[0]
