"""The agent protocol (lease, result, failure, release) and job status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request
from starlette.responses import Response

from profiler_server import jobs, listings
from profiler_server.agent_process import CALLS, AgentCallFailed
from profiler_server.agent_process import INVALID as BODY_INVALID
from profiler_server.cancel import cancel_job
from profiler_server.db import Job
from profiler_server.deps import AgentDep, Credentials, PrincipalDep, SessionDep, TeamDep
from profiler_server.errors import NotFound, ServerError
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses
from profiler_server.routes.fast_json import NamedRoute, bearer_token, parse_request, read_request
from shared.api import (
    FailureRecorded,
    JobFailure,
    JobFilter,
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


# The two hottest endpoints: the server process reads the call and the agent process
# (profiler_server/agent_process.py) validates and commits it, the calls that arrive together in
# one transaction. Plain Starlette routes serve them ahead of these documented FastAPI routes.
@router.post("/lease", response_model=LeaseResponse, responses=AUTH | BODY | error_responses(404, 409))
async def lease(body: LeaseRequest, request: Request, creds: Credentials) -> Response:
    return await _agent_call(request, "lease")


@router.post("/{job_id}/result", response_model=ResultRecorded, responses=AUTH | BODY | error_responses(404, 409))
async def result(body: JobResult, request: Request, creds: Credentials, job_id: int = JobId) -> Response:
    return await _agent_call(request, "result", "job_id")


async def _agent_call(request: Request, call: str, path_row_id: str | None = None) -> Response:
    """Hand the call to the agent process; its answer, or the error it names (a body that does not
    validate is parsed here again, for FastAPI's 422)."""
    model = CALLS[call][0]
    raw, job_id = await read_request(request, model, path_row_id)
    status, answer = await request.app.state.agent_process.run(call, bearer_token(request), job_id, raw)
    if status == 200:
        return Response(answer, media_type="application/json")
    if status == BODY_INVALID:
        await parse_request(request, model, path_row_id)  # raises the 422
    if status >= 500:
        raise AgentCallFailed(answer)
    raise ServerError(answer, status)


async def lease_fast(request: Request) -> Response:
    return await _agent_call(request, "lease")


async def result_fast(request: Request) -> Response:
    return await _agent_call(request, "result", "job_id")


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
