"""What the farm is doing now: the overview counts and each device's temperature, job and day."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profiler_server.auth import Principal
from profiler_server.db import Device, Job, Measurement, PredictorVersion, utcnow
from profiler_server.errors import NotFound
from profiler_server.listings import job_views
from shared.api import DeviceView, FarmStatus, JobView, OtherTeamJob

PACE_WINDOW = timedelta(minutes=10)  # jobs per minute are averaged over this window


def farm_status(session: Session) -> FarmStatus:
    now = utcnow()
    by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    done_recently = session.scalar(
        select(func.count()).where(Job.state == "done", Job.finished_at >= now - PACE_WINDOW)
    )
    failures = session.scalar(
        select(func.count()).where(Job.state == "failed", Job.finished_at >= now - timedelta(hours=1))
    )
    served = select(PredictorVersion.device_class, PredictorVersion.runtime).where(
        PredictorVersion.state == "ready"
    )
    return FarmStatus(
        devices_online=session.scalar(select(func.count()).where(Device.online.is_(True))),
        queue_depth=by_state.get("queued", 0),
        running=by_state.get("running", 0),
        jobs_per_minute=done_recently / (PACE_WINDOW.total_seconds() / 60),
        failures_last_hour=failures,
        predictors=session.scalar(select(func.count()).select_from(served.distinct().subquery())),
    )


def device_views(session: Session, principal: Principal, serial: str | None = None) -> list[DeviceView]:
    """Devices (all, or the one ``serial``) with last temperature, current job and today's count."""
    query = select(Device).order_by(Device.device_class, Device.serial)
    if serial is not None:
        query = query.where(Device.serial == serial)
    devices = list(session.scalars(query))
    if serial is not None and not devices:
        raise NotFound(f"no device with serial {serial!r}; GET /v1/devices lists them")
    return [_device_view(session, principal, d) for d in devices]


def _start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _device_view(session: Session, principal: Principal, device: Device) -> DeviceView:
    last = session.execute(
        select(Measurement.temp_after_c, Measurement.temp_before_c, Measurement.created_at)
        .where(Measurement.serial == device.serial)
        .where((Measurement.temp_after_c.is_not(None)) | (Measurement.temp_before_c.is_not(None)))
        .order_by(Measurement.id.desc())
        .limit(1)
    ).first()
    today = session.scalar(
        select(func.count()).where(
            Measurement.serial == device.serial, Measurement.created_at >= _start_of_day(utcnow())
        )
    )
    job = session.scalars(
        select(Job).where(Job.state == "running", Job.leased_by_device == device.serial).limit(1)
    ).first()
    return DeviceView(
        serial=device.serial, device_class=device.device_class, agent_id=device.agent_id, online=device.online,
        last_seen=device.last_seen, info=device.info,
        temperature_c=None if last is None else (last[0] if last[0] is not None else last[1]),
        temperature_at=None if last is None else last[2],
        current_job=None if job is None else _visible_job(session, principal, job),
        measured_today=today,
    )  # fmt: skip


def _visible_job(session: Session, principal: Principal, job: Job) -> JobView | OtherTeamJob:
    """The full job view for its team, the admin and agents; for another team only that the
    device is busy (which job, what kind), not whose model it runs."""
    if principal.role in ("admin", "agent") or job.team_id == principal.team_id:
        return job_views(session, [job])[0]
    return OtherTeamJob(id=job.id, state=job.state, kind=job.kind, device_class=job.device_class,
                        detail="a job of another team")  # fmt: skip
