"""ORM tables (SQLAlchemy 2). Wire schemas live in ``shared.schemas``; routes convert at the edge.

Job states: ``queued`` -> ``running`` (leased) -> ``done`` | ``failed``; an expired or released lease
goes back to ``queued``; a queued job whose campaign (or owner) cancels it becomes ``cancelled``. A measurement belongs to exactly one job (``job_id`` is unique), which is
what makes "a result is accepted once" hold even under races.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Fair round-robin: the team leased least recently goes first among equal priorities.
    last_lease_at: Mapped[datetime | None] = mapped_column(default=None)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | team | agent
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Written at most once a minute per token (see auth.authenticate), not on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(128), unique=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    device_class: Mapped[str] = mapped_column(String(200), index=True)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    online: Mapped[bool] = mapped_column(Boolean, default=True)


class Artifact(Base):
    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(16))  # onnx | tflite
    size: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # block kind or "network"
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # BlockConfig.key() + format: lets a repeat campaign find its artifact without exporting again.
    config_key: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArtifactOwner(Base):
    """A team that uploaded a network: only its owners (and an agent measuring it) may read it."""

    __tablename__ = "artifact_owners"
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    device_class: Mapped[str] = mapped_column(String(200))
    runtime: Mapped[str] = mapped_column(String(100))  # RuntimeSettings.key()
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # runtime settings + warmup/runs
    priority: Mapped[int] = mapped_column(Integer, default=0)
    seed: Mapped[int | None] = mapped_column(Integer, default=None)
    n: Mapped[int] = mapped_column(Integer, default=0)
    sampling: Mapped[str] = mapped_column(String(32), default="explicit")
    # exporting | running | done | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="exporting")
    cached: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class CampaignItem(Base):
    """The artifacts a campaign asked for, measured by it or answered from the cache."""

    __tablename__ = "campaign_items"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), primary_key=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue", "state", "device_class", "priority", "team_id", "id"),
        Index("ix_jobs_lease", "state", "lease_expires_at"),
        Index("ix_jobs_live", "artifact_sha256", "device_class", "runtime", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True, default=None)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
    kind: Mapped[str] = mapped_column(String(32))
    device_class: Mapped[str] = mapped_column(String(200))
    runtime: Mapped[str] = mapped_column(String(100))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_id: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    leased_by_device: Mapped[str | None] = mapped_column(String(128), default=None)
    leased_by_agent: Mapped[str | None] = mapped_column(String(64), default=None)  # renews and releases it
    error: Mapped[str | None] = mapped_column(Text, default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Measurement(Base):
    __tablename__ = "measurements"
    __table_args__ = (Index("ix_meas_key", "device_class", "runtime", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), index=True)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    kind: Mapped[str] = mapped_column(String(32))
    device_class: Mapped[str] = mapped_column(String(200))
    runtime: Mapped[str] = mapped_column(String(100))
    serial: Mapped[str] = mapped_column(String(128))
    median_ms: Mapped[float] = mapped_column(Float)
    mean_ms: Mapped[float] = mapped_column(Float)
    p10_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    std_ms: Mapped[float] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer)
    warmup: Mapped[int] = mapped_column(Integer, default=0)
    samples: Mapped[list[Any]] = mapped_column(default=list)
    temp_before_c: Mapped[float | None] = mapped_column(Float, default=None)
    temp_after_c: Mapped[float | None] = mapped_column(Float, default=None)
    tool: Mapped[str] = mapped_column(String(200), default="")
    tool_version: Mapped[str] = mapped_column(String(200), default="")
    flags: Mapped[list[Any]] = mapped_column(default=list)
    unstable: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PredictorVersion(Base):
    """A fitted latency predictor (bytes of ``shared.predictor.dump_predictor``) and its metrics."""

    __tablename__ = "predictor_versions"
    __table_args__ = (UniqueConstraint("device_class", "runtime", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    device_class: Mapped[str] = mapped_column(String(200), index=True)
    runtime: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="ready")  # fitting | ready | failed | outdated
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    blob_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    feature_ranges: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_train: Mapped[int] = mapped_column(Integer, default=0)
    n_test: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    team_id: Mapped[int | None] = mapped_column(Integer, default=None)  # who asked; None: automatic refit


class NetworkBlocks(Base):
    """The block list of an uploaded network (as ``POST /v1/predict`` takes it): with the network's
    measurements, the training data of the network-level correction."""

    __tablename__ = "network_blocks"
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), primary_key=True)
    blocks: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
