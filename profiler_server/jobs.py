"""The job queue: create, lease, expire, report, fail, release.

Leasing order for a device: highest priority first, then the team that leased least recently
(fair round-robin across teams), then the oldest job. Every transaction on SQLite is
``BEGIN IMMEDIATE`` and the lease itself is a conditional ``UPDATE ... WHERE state='queued'``, so two
agents can never hold the same job, on SQLite or on a server database.

PostgreSQL runs transactions concurrently (READ COMMITTED), so there the lease picks its row with
``FOR UPDATE SKIP LOCKED`` (concurrent leasers take different jobs instead of queueing on one row),
and every read-then-write of a job or campaign locks its rows first (``FOR UPDATE``): a reaper
requeue cannot overwrite a newer lease, and two results finishing a campaign's last jobs at once
cannot both miss that the campaign is done. SQLite ignores ``FOR UPDATE``; its write lock suffices.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sqlite3
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BindParameter,
    Executable,
    ScalarSelect,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from profiler_server.auth import AuthError, Principal
from profiler_server.db import (
    Agent,
    Artifact,
    Campaign,
    CampaignItem,
    Job,
    Measurement,
    Team,
    prepared,
    utcnow,
)
from profiler_server.db.models import UTCDateTime
from profiler_server.errors import Conflict, NotFound
from shared.api import MeasurementSummary
from shared.schemas import JobFailure, JobLease, JobRelease, JobResult, JobSettings

log = logging.getLogger(__name__)
LIVE = ("queued", "running")


def new_job(
    artifact: Artifact,
    team_id: int,
    device_class: str,
    settings: JobSettings,
    *,
    campaign_id: int | None = None,
    priority: int = 0,
    max_attempts: int = 3,
    name: str = "",
) -> Job:
    return Job(
        campaign_id=campaign_id,
        team_id=team_id,
        artifact_sha256=artifact.sha256,
        kind=artifact.kind,
        device_class=device_class,
        runtime=settings.runtime.key(),
        settings=settings.stored(),
        priority=priority,
        max_attempts=max_attempts,
        name=name,
    )


def _pick_queued(device_class: str | BindParameter, skip_locked: bool = False) -> ScalarSelect:
    """Scalar subquery: the id of the job to lease next for ``device_class`` (order in the module
    docstring). Every step is an index lookup on ``ix_jobs_queue``; ids grow with age.
    ``skip_locked`` (PostgreSQL): the oldest such job that no concurrent lease has locked."""
    j_top, j_team, j_pick = aliased(Job), aliased(Job), aliased(Job)
    # ORDER BY ... LIMIT 1 rather than max(): SQLite seeks the index's last entry for that, where
    # max() under an equality prefix read every queued job of the class (150 us at 6,000 queued)
    top = (
        select(j_top.priority)
        .where(j_top.state == "queued", j_top.device_class == device_class)
        .order_by(j_top.priority.desc())
        .limit(1)
        .correlate(None)
        .scalar_subquery()
    )
    has_work = (
        select(j_team.id)
        .where(j_team.state == "queued", j_team.device_class == device_class, j_team.priority == top)
        .where(j_team.team_id == Team.id)
        .correlate(Team)
        .exists()
    )
    team = (
        select(Team.id)
        .where(has_work)
        .order_by(Team.last_lease_at.is_not(None), Team.last_lease_at, Team.id)
        .limit(1)
        .correlate(None)
        .scalar_subquery()
    )
    if skip_locked:
        return (
            select(j_pick.id)
            .where(j_pick.state == "queued", j_pick.device_class == device_class)
            .where(j_pick.priority == top, j_pick.team_id == team)
            .order_by(j_pick.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .correlate(None)
            .scalar_subquery()
        )
    return (
        select(func.min(j_pick.id))
        .where(j_pick.state == "queued", j_pick.device_class == device_class)
        .where(j_pick.priority == top, j_pick.team_id == team)
        .correlate(None)
        .scalar_subquery()
    )


_ANY_EXPIRED = text(
    "SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires_at < :now LIMIT 1"
).bindparams(bindparam("now", type_=UTCDateTime))
_TOUCH_TEAM = text("UPDATE teams SET last_lease_at = :now WHERE id = :team_id").bindparams(
    bindparam("now", type_=UTCDateTime)
)
EXPIRY_CHECKED = "jobs.expiry_checked"  # session.info key: the transaction that requeued expired leases
_ANY_QUEUED = text("SELECT 1 FROM jobs WHERE state = 'queued' AND device_class = :device_class LIMIT 1")


@functools.lru_cache(maxsize=2)
def _lease_statement(skip_locked: bool = False) -> Executable:
    """``UPDATE ... WHERE id = (next queued) AND state = 'queued' RETURNING``, built once: the
    lease is the hottest statement, and building it costs more than running it."""
    t = Job.__table__  # table-level: the ORM's bulk-update machinery costs half a lease
    return (
        update(t)
        .where(t.c.id == _pick_queued(bindparam("b_class"), skip_locked), t.c.state == "queued")
        .values(
            state="running",
            lease_id=bindparam("b_lease"),
            lease_expires_at=bindparam("b_expires", type_=UTCDateTime),
            leased_by_device=bindparam("b_serial"),
            leased_by_agent=bindparam("b_agent"),
            attempts=t.c.attempts + 1,
        )
        .returning(
            t.c.id,
            t.c.team_id,
            t.c.artifact_sha256,
            t.c.kind,
            cast(t.c.settings, Text).label("settings"),
            t.c.lease_id,
            t.c.lease_expires_at,
        )
    )


def lease_job(
    session: Session, serial: str, device_class: str, lease_s: float, agent_id: str | None = None
) -> JobLease | None:
    """Lease the next job for device ``serial`` of ``device_class`` (None when nothing is queued)
    to agent ``agent_id``, the only agent that may renew or release it.

    The conditional UPDATE is atomic even without SQLite's write lock: a row that another server
    process took no longer matches ``state = 'queued'``. On PostgreSQL the pick skips rows that
    concurrent leases hold; when it finds none of them free, the next try waits for those leases to
    commit instead (so a busy queue never answers "nothing queued" by mistake).
    """
    now = utcnow()
    conn = prepared.connection(session)
    skip_locked = conn.dialect.name == "postgresql"
    # prepared.first: the hot path's statements skip SQLAlchemy's execute path on SQLite. Expired
    # leases are requeued once per transaction: the group commit leases for several agents in one.
    transaction = session.get_transaction()
    if session.info.get(EXPIRY_CHECKED) is not transaction:
        if prepared.first(conn, _ANY_EXPIRED, {"now": now}) is not None:
            expire_leases(session, now=now)
            session.flush()  # the core UPDATE below must see the requeued rows
        session.info[EXPIRY_CHECKED] = transaction
    params = {"b_class": device_class, "b_serial": serial, "b_agent": agent_id,
              "b_expires": now + timedelta(seconds=lease_s)}  # fmt: skip
    for attempt in range(8):  # only loops when another server process won the same row
        statement = _lease_statement(skip_locked and attempt % 2 == 0)
        lease_id = secrets.token_hex(16)  # 32 hex digits like uuid4().hex, at a fifth of its cost
        row = prepared.first(conn, statement, {**params, "b_lease": lease_id})
        if row is not None:
            prepared.execute(conn, _TOUCH_TEAM, {"now": now, "team_id": row.team_id})
            return lease_view(row)
        if prepared.first(conn, _ANY_QUEUED, {"device_class": device_class}) is None:
            return None
    return None


@functools.lru_cache(maxsize=256)
def _job_settings(text: str) -> JobSettings:
    """A job's stored settings, parsed once per distinct text (a campaign's jobs share theirs)."""
    return JobSettings.model_validate_json(text)


def lease_view(job: Any) -> JobLease:
    """The lease handed to the agent, from the lease statement's row (settings as JSON text)."""
    settings = _job_settings(job.settings)
    artifact_format = "tflite" if settings.runtime.runtime == "tflite" else "onnx"
    return JobLease(
        job_id=job.id,
        lease_id=job.lease_id,
        lease_expires_at=job.lease_expires_at,
        artifact_sha256=job.artifact_sha256,
        kind=job.kind,
        artifact_url=f"/v1/artifacts/{job.artifact_sha256}",
        format=artifact_format,
        settings=settings.runtime,
        warmup=settings.warmup,
        runs=settings.runs,
        min_seconds=settings.min_seconds,
    )


def _return_to_queue(session: Session, job: Job, reason: str) -> None:
    """Requeue a job whose lease ended without a result, or fail it when attempts are used up."""
    if job.attempts >= job.max_attempts:
        job.state = "failed"
        job.error = f"{reason}; gave up after {job.attempts} attempts"
        job.finished_at = utcnow()
    else:
        job.state = "queued"
        job.error = reason
    job.lease_id = None
    job.lease_expires_at = None
    job.leased_by_device = job.leased_by_agent = None


def expire_leases(session: Session, device_class: str | None = None, now: datetime | None = None) -> int:
    """Requeue (or fail) running jobs whose lease ran out; returns how many."""
    now = now or utcnow()
    query = select(Job).where(Job.state == "running", Job.lease_expires_at < now)
    # A lease another transaction is finishing (result, failure, expiry) is left to it.
    query = query.with_for_update(skip_locked=True).execution_options(populate_existing=True)
    if device_class is not None:
        query = query.where(Job.device_class == device_class)
    expired = list(session.scalars(query))
    for job in expired:
        _return_to_queue(session, job, f"lease expired on device {job.leased_by_device}")
        _complete_campaigns(session, job)
    if expired:
        log.info("requeued %d jobs with expired leases", len(expired))
    return len(expired)


def requeue_device_leases(session: Session, serials: list[str]) -> int:
    query = select(Job).where(Job.state == "running", Job.leased_by_device.in_(serials))
    query = query.with_for_update(skip_locked=True).execution_options(populate_existing=True)
    jobs = list(session.scalars(query))
    for job in jobs:
        _return_to_queue(session, job, f"device {job.leased_by_device} went offline")
        _complete_campaigns(session, job)
    return len(jobs)


def extend_leases(session: Session, agent_id: str, serials: list[str], lease_s: float) -> None:
    """A heartbeat keeps alive the leases that this agent holds on its listed devices (long phone
    jobs). A lease held by another agent on the same serial (one that died and was replaced) is
    left to expire, so its job returns to the queue."""
    session.execute(
        update(Job)
        .where(Job.state == "running", Job.leased_by_agent == agent_id, Job.leased_by_device.in_(serials))
        .where(Job.lease_expires_at >= utcnow())
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )


def check_holder(session: Session, job: Job, principal: Principal, agent_id: str | None) -> None:
    """403 when the agent holding ``job`` was registered with another token; 409 when the caller
    names another agent than the holder. Leases taken before agents were recorded pass."""
    if job.leased_by_agent is None:
        return
    if agent_id is not None and agent_id != job.leased_by_agent:
        raise Conflict(f"job {job.id} is leased by agent {job.leased_by_agent!r}, not {agent_id!r}: "
                       "an agent renews and releases only its own leases")  # fmt: skip
    holder = session.get(Agent, job.leased_by_agent)
    if principal.role != "admin" and holder is not None and holder.token_id != principal.token_id:
        raise AuthError(403, f"job {job.id} is leased by an agent registered with another token")


def _check_lease(job_id: int, job: Any, lease_id: str, serial: str | None) -> None:
    """409 unless ``job`` (a Job or a row) is running under ``lease_id`` on ``serial``, in time."""
    if job.state != "running" or job.lease_id != lease_id:
        why = f": {job.error}" if getattr(job, "error", None) else ""  # e.g. the lease expired and was requeued
        raise Conflict(
            f"job {job_id} is not leased under lease {lease_id!r} (state {job.state}{why}); result ignored"
        )
    if job.lease_expires_at < utcnow():
        raise Conflict(f"lease {lease_id!r} on job {job_id} expired at {job.lease_expires_at.isoformat()}")
    if serial is not None and job.leased_by_device != serial:
        raise Conflict(f"job {job_id} was leased to device {job.leased_by_device!r}, not {serial!r}")


def _held_job(session: Session, job_id: int, lease_id: str, serial: str | None = None) -> Job:
    """The running job held under ``lease_id``; 404 for no such job, 409 for a late/foreign lease."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    _check_lease(job_id, job, lease_id, serial)
    return job


@functools.lru_cache(maxsize=1)
def _held_job_with_config() -> Executable:
    """The job's lease columns and its artifact's config in one prebuilt query (hot path)."""
    return (
        select(
            Job.id, Job.state, Job.lease_id, Job.lease_expires_at, Job.leased_by_device, Job.campaign_id,
            Job.artifact_sha256, Job.kind, Job.device_class, Job.runtime, Job.error, Artifact.config,
        )
        .join(Artifact, Artifact.sha256 == Job.artifact_sha256)
        .where(Job.id == bindparam("b_job"))
        .with_for_update(of=Job)  # PostgreSQL: the lease cannot expire between check and write
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def _result_statements() -> tuple[Executable, Executable]:
    """Table-level INSERT of a measurement and UPDATE of its job, built once (parameters at run)."""
    jobs_t, meas_t = Job.__table__, Measurement.__table__
    columns = [c for c in meas_t.c if c.key != "id"]  # typed parameters: JSON and datetimes convert
    insert_stmt = (
        insert(meas_t).values({c.key: bindparam(c.key, type_=c.type) for c in columns}).returning(meas_t.c.id)
    )
    done_stmt = (
        update(jobs_t)
        .where(jobs_t.c.id == bindparam("b_job"), jobs_t.c.lease_id == bindparam("b_lease"))
        .values(
            state="done", error=None, finished_at=bindparam("b_now"), lease_id=None, lease_expires_at=None,
            leased_by_agent=None,
        )
    )
    return insert_stmt, done_stmt


def record_result(session: Session, job_id: int, body: JobResult) -> tuple[int, list[Campaign]]:
    """Store the measurement of a held job; returns its id and the campaigns this result completed.

    Core statements rather than ORM objects: this runs once per measured block."""
    conn = prepared.connection(session)
    job = prepared.first(conn, _held_job_with_config(), {"b_job": job_id})
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    _check_lease(job_id, job, body.lease_id, body.serial)
    stats = body.stats
    values = dict(
        job_id=job_id, artifact_sha256=job.artifact_sha256, config=job.config, kind=job.kind,
        device_class=job.device_class, runtime=job.runtime, serial=body.serial, median_ms=stats.median_ms,
        mean_ms=stats.mean_ms, p10_ms=stats.p10_ms, p90_ms=stats.p90_ms, std_ms=stats.std_ms, runs=stats.runs,
        warmup=stats.warmup, samples=stats.samples_ms, temp_before_c=stats.temp_before_c,
        temp_after_c=stats.temp_after_c, tool=stats.tool, tool_version=stats.tool_version, flags=stats.flags,
        unstable=stats.unstable, created_at=utcnow(),
    )  # fmt: skip
    insert_stmt, done_stmt = _result_statements()
    try:
        measurement_id = prepared.first(conn, insert_stmt, values).id
    except (IntegrityError, sqlite3.IntegrityError) as exc:  # a second result: the unique job_id says no
        raise Conflict(f"job {job_id} already has a measurement") from exc
    prepared.execute(conn, done_stmt, {"b_job": job_id, "b_lease": body.lease_id, "b_now": utcnow()})
    done = SimpleNamespace(**{**job._asdict(), "state": "done"})
    return measurement_id, _complete_campaigns(session, done)


def record_failure(
    session: Session, principal: Principal, job_id: int, body: JobFailure
) -> tuple[Job, list[Campaign]]:
    job = _held_job(session, job_id, body.lease_id, body.serial)
    check_holder(session, job, principal, body.agent_id)
    tail = body.output[-4000:]
    reason = f"{body.error}\n{tail}".strip() if tail else body.error
    if not body.retry:
        job.attempts = job.max_attempts  # the model itself is at fault: no other device will do better
    _return_to_queue(session, job, reason)
    return job, _complete_campaigns(session, job)


def release_job(session: Session, principal: Principal, job_id: int, body: JobRelease) -> Job:
    """The agent holding the job gives it back untried (shutting down): not counted as an attempt."""
    job = _held_job(session, job_id, body.lease_id)
    check_holder(session, job, principal, body.agent_id)
    job.attempts = max(0, job.attempts - 1)
    job.state = "queued"
    job.lease_id = job.lease_expires_at = job.leased_by_device = job.leased_by_agent = None
    return job


def campaign_live_jobs(session: Session, campaign: Campaign) -> int:
    """Queued or running jobs that the campaign waits for: its own, and those of other campaigns
    that measure the configs it took from the cache."""
    items = select(CampaignItem.artifact_sha256).where(CampaignItem.campaign_id == campaign.id)
    return session.scalar(
        select(func.count()).where(
            Job.state.in_(LIVE),
            or_(
                Job.campaign_id == campaign.id,
                and_(
                    Job.artifact_sha256.in_(items),
                    Job.device_class == campaign.device_class,
                    Job.runtime == campaign.runtime,
                ),
            ),
        )
    )


def _waiting_on_job() -> Any:
    """Where clause: running campaigns that a finished job may have been the last of."""
    waiting = select(CampaignItem.campaign_id).where(CampaignItem.artifact_sha256 == bindparam("b_sha"))
    return and_(
        Campaign.state == "running",
        or_(
            Campaign.id == bindparam("b_campaign"),
            and_(
                Campaign.id.in_(waiting),
                Campaign.device_class == bindparam("b_class"),
                Campaign.runtime == bindparam("b_runtime"),
            ),
        ),
    )


@functools.lru_cache(maxsize=1)
def _any_campaign_waiting_on() -> Executable:
    """Core, unlocked: is any campaign waiting on the job at all? Most results (and every result
    outside a campaign) end here, without the ORM load below (prebuilt: hot path)."""
    return select(Campaign.__table__.c.id).where(_waiting_on_job()).limit(1)


@functools.lru_cache(maxsize=1)
def _campaigns_waiting_on() -> Executable:
    """The campaigns of ``_waiting_on_job`` as locked ORM rows (prebuilt: hot path)."""
    # FOR UPDATE (in id order: no deadlocks) serializes the "was that the last live job?" count
    # per campaign on PostgreSQL, where two results may otherwise each still see the other's job.
    return (
        select(Campaign)
        .where(_waiting_on_job())
        .order_by(Campaign.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _complete_campaigns(session: Session, job: Any) -> list[Campaign]:
    """Mark done every running campaign that this finished job was the last live job of."""
    if job.state in LIVE:
        return []
    if session.new or session.dirty or session.deleted:  # a clean session's flush still cost ~30 us
        session.flush()
    params = {"b_sha": job.artifact_sha256, "b_campaign": job.campaign_id, "b_class": job.device_class,
              "b_runtime": job.runtime}  # fmt: skip
    if prepared.first(prepared.connection(session), _any_campaign_waiting_on(), params) is None:
        return []
    completed = []
    for campaign in session.scalars(_campaigns_waiting_on(), params):
        if campaign_live_jobs(session, campaign) == 0:
            campaign.state, campaign.completed_at = "done", utcnow()
            completed.append(campaign)
            # campaigns.fire_pending(session) tells the predictor after the commit
            session.info.setdefault("completed_campaigns", []).append(
                (campaign.id, campaign.device_class, campaign.runtime)
            )
    return completed


def live_or_measured(session: Session, sha256: str, device_class: str, runtime: str) -> bool:
    """True when (artifact, device class, runtime) has a measurement or a queued/running job."""
    same = and_(Job.artifact_sha256 == sha256, Job.device_class == device_class, Job.runtime == runtime)
    found = session.scalar(select(Job.id).where(same, or_(Job.state.in_(LIVE), Job.state == "done")).limit(1))
    return found is not None


def measurement_summary(meas: Measurement) -> MeasurementSummary:
    return MeasurementSummary(
        id=meas.id, median_ms=meas.median_ms, mean_ms=meas.mean_ms, p10_ms=meas.p10_ms, p90_ms=meas.p90_ms,
        std_ms=meas.std_ms, runs=meas.runs, serial=meas.serial, tool=meas.tool, unstable=meas.unstable,
    )  # fmt: skip
