"""Who may read what between teams.

- Block artifacts and block measurements are lab-wide: any token reads them (they are generated
  from search-space configs, and sharing them is the point of the farm).
- An uploaded network is its owners': the teams that uploaded it (``artifact_owners``), the admin,
  and an agent while one of its devices holds a job measuring it.
- Network measurements are their team's: a team sees the rows of its own jobs only.
- Uploading a network another team already measured never hands over that team's job: the asking
  team gets a job of its own, done at once with a copy of the stored measurement (or queued, when
  the other team's measurement is still running).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm import Session

from profiler_server.auth import Principal
from profiler_server.db import Agent, Artifact, ArtifactOwner, Device, Job, Measurement, utcnow
from profiler_server.errors import NotFound

NETWORK = "network"


def add_owner(session: Session, sha256: str, team_id: int) -> None:
    if session.get(ArtifactOwner, (sha256, team_id)) is None:
        session.add(ArtifactOwner(artifact_sha256=sha256, team_id=team_id))


def check_artifact_readable(session: Session, principal: Principal, artifact: Artifact) -> None:
    """404 (as for an unknown artifact: its existence is not for others to learn) unless readable."""
    if artifact.kind != NETWORK or principal.role == "admin":
        return
    if principal.role == "team" and session.get(ArtifactOwner, (artifact.sha256, principal.team_id)):
        return
    if principal.role == "agent" and _agent_holds_job_for(session, principal, artifact.sha256):
        return
    raise NotFound(f"no artifact {artifact.sha256} readable with this token")


def _agent_holds_job_for(session: Session, principal: Principal, sha256: str) -> bool:
    devices = select(Device.serial).join(Agent, Agent.id == Device.agent_id).where(
        Agent.token_id == principal.token_id
    )
    held = select(Job.id).where(
        Job.artifact_sha256 == sha256, Job.state == "running", Job.leased_by_device.in_(devices)
    )
    return session.scalar(held.limit(1)) is not None


def visible_measurements(principal: Principal) -> ColumnElement[bool]:
    """WHERE clause: every block measurement, and network measurements of the principal's team."""
    if principal.role == "admin":
        return true()
    own_jobs = select(Job.id).where(Job.team_id == principal.team_id)
    return or_(Measurement.kind != NETWORK, Measurement.job_id.in_(own_jobs))


def own_network_job(session: Session, team_id: int, sha256: str, device_class: str, runtime: str) -> Job | None:
    """The team's newest live or done job measuring this network on this class and runtime."""
    return session.scalars(
        select(Job)
        .where(Job.team_id == team_id, Job.artifact_sha256 == sha256)
        .where(Job.device_class == device_class, Job.runtime == runtime)
        .where(Job.state.in_(("queued", "running", "done")))
        .order_by(Job.id.desc())
        .limit(1)
    ).first()


def shared_measurement(session: Session, sha256: str, device_class: str, runtime: str) -> Measurement | None:
    """The newest stored measurement of this network on this class and runtime, by any team."""
    return session.scalars(
        select(Measurement)
        .where(Measurement.artifact_sha256 == sha256)
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .order_by(Measurement.id.desc())
        .limit(1)
    ).first()


def copy_measurement(session: Session, job: Job, source: Measurement) -> Measurement:
    """Finish ``job`` (the asking team's) with a copy of another team's stored measurement."""
    skip = {"id", "job_id"}
    values = {c.key: getattr(source, c.key) for c in Measurement.__table__.columns if c.key not in skip}
    copy = Measurement(job_id=job.id, **values)
    job.state, job.finished_at = "done", utcnow()
    session.add(copy)
    return copy


def device_class_known(session: Session, device_class: str) -> tuple[bool, bool]:
    """(some agent ever registered a device of this class, one of them is online now)."""
    rows = session.execute(select(Device.online).where(Device.device_class == device_class)).all()
    return bool(rows), any(online for (online,) in rows)


def known_device_classes(session: Session) -> list[str]:
    return sorted(set(session.scalars(select(Device.device_class))))

