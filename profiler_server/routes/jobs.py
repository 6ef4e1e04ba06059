"""The agent protocol (lease, result, failure, release) and job status."""

from __future__ import annotations

from fastapi import APIRouter, Path

from profiler_server import campaigns, devices, jobs
from profiler_server.db import Job
from profiler_server.deps import AgentDep, PrincipalDep, SessionDep, SettingsDep
from profiler_server.errors import NotFound
from shared.schemas import JobFailure, JobRelease, JobResult, LeaseRequest, LeaseResponse

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Path(ge=1, le=2**62)


@router.post("/lease", response_model=LeaseResponse)
def lease(
    body: LeaseRequest, session: SessionDep, settings: SettingsDep, principal: AgentDep
) -> LeaseResponse:
    device = devices.agent_device(session, principal, body.agent_id, body.serial)
    job = jobs.lease_job(session, device, settings.lease_s)
    view = jobs.lease_view(job) if job is not None else None
    session.commit()
    campaigns.fire_pending(session)  # leasing requeues expired jobs, which may fail a campaign's last
    return LeaseResponse(job=view)


@router.post("/{job_id}/result")
def result(body: JobResult, session: SessionDep, _: AgentDep, job_id: int = JobId) -> dict:
    row, _ = jobs.record_result(session, job_id, body)
    session.commit()
    campaigns.fire_pending(session)
    return {"measurement_id": row.id}


@router.post("/{job_id}/failure")
def failure(body: JobFailure, session: SessionDep, _: AgentDep, job_id: int = JobId) -> dict:
    job, _ = jobs.record_failure(session, job_id, body)
    session.commit()
    campaigns.fire_pending(session)
    return {"state": job.state, "attempts": job.attempts, "error": job.error}


@router.post("/{job_id}/release")
def release(body: JobRelease, session: SessionDep, _: AgentDep, job_id: int = JobId) -> dict:
    job = jobs.release_job(session, job_id, body)
    session.commit()
    return {"state": job.state}


@router.get("/{job_id}")
def get_job(session: SessionDep, principal: PrincipalDep, job_id: int = JobId) -> dict:
    job = session.get(Job, job_id)
    visible = principal.role in ("admin", "agent") or (job is not None and job.team_id == principal.team_id)
    if job is None or not visible:
        raise NotFound(f"job {job_id} does not exist or belongs to another team")
    return jobs.job_view(session, job)
