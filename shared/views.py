"""What the farm's read endpoints answer, as the lab's client reads it (pydantic v2).

These models describe the JSON of ``GET /v1/status``, ``/v1/devices``, ``/v1/campaigns``,
``/v1/jobs``, ``/v1/tokens`` and ``/v1/predictors``. Fields the server adds later are kept
(``extra="allow"``), so a newer server never breaks an older client and ``--json`` output loses
nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _View(BaseModel):
    model_config = ConfigDict(extra="allow")


class FarmStatus(_View):
    devices_online: int = 0
    queue_depth: int = 0
    running: int = 0
    jobs_per_minute: float = 0.0
    failures_last_hour: int = 0
    predictors: int = 0


class MeasurementSummary(_View):
    id: int | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    std_ms: float | None = None
    runs: int | None = None
    serial: str | None = None


class JobView(_View):
    """A job; another team's job shows only id, state, kind and device class (``detail`` says so)."""

    id: int
    state: str
    campaign_id: int | None = None
    device_class: str | None = None
    runtime: str | None = None
    detail: str | None = None
    kind: str | None = None
    name: str | None = None
    attempts: int = 0
    error: str | None = None
    measurement: MeasurementSummary | None = None


class DeviceView(_View):
    serial: str
    device_class: str
    agent_id: str | None = None
    online: bool = False
    last_seen: datetime | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    # GET /v1/devices/{serial} adds these
    temperature_c: float | None = None
    current_job: JobView | None = None
    measured_today: int | None = None

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", ""))

    @property
    def runtimes(self) -> list[str]:
        """Runtimes the device's agent declared it can measure; empty: not declared."""
        return list(self.info.get("runtimes") or [])


class CampaignView(_View):
    id: int
    state: str
    device_class: str
    runtime: str
    team: str | int | None = None
    n: int = 0
    priority: int = 0
    jobs: int = 0
    cached: int = 0
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    eta_s: float | None = None
    error: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def progress(self) -> float:
        """Share of the campaign's jobs that finished (done or failed); 1.0 for a campaign without jobs."""
        return (self.done + self.failed) / self.jobs if self.jobs else 1.0


class Page(_View, Generic[T]):
    """One page of a listing: ``items`` plus the paging the server applied."""

    items: list[T]
    total: int
    limit: int
    offset: int = 0


class TokenView(_View):
    id: int
    team: str | int | None = None
    role: str
    name: str = ""
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class PredictorView(_View):
    id: int
    device_class: str
    runtime: str
    version: int
    state: str = "ready"
    error: str | None = None
    created_at: datetime | None = None
    n_train: int | None = None
    n_test: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
