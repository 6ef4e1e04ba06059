"""The HTTP API's contract: a pydantic model for every request and every JSON answer of the farm.

The server declares these as its routes' bodies and ``response_model``; ``search_client.remote``
(the lab's Python client) and the phone-agent's client parse the answers into them. The agent
protocol, runtime settings and prediction bodies are defined in ``shared.schemas`` and re-exported
here, so this module names the whole API.

Answers keep fields a newer server adds (``extra="allow"``): an older client never breaks and
``--json`` output loses nothing. Bodies a client sends refuse unknown fields (``extra="forbid"``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.kernels import CampaignConfig
from shared.network_correction import NetworkCorrection
from shared.schemas import (
    JOB_DEFAULTS,
    AgentRegister,
    AgentRegistered,
    BadRuntime,
    DeviceInfo,
    Heartbeat,
    JobFailure,
    JobLease,
    JobRelease,
    JobResult,
    JobSettings,
    LeaseRequest,
    LeaseResponse,
    MeasurementStats,
    MinSeconds,
    PredictorRef,
    PredictRequest,
    PredictResponse,
    Runs,
    RuntimeSettings,
    RuntimeText,
    Warmup,
    runtime_key,
)
from shared.space import SearchSpace

__all__ = [
    "JOB_DEFAULTS", "AdaptedFrom", "AgentRegister", "AgentRegistered", "BadRuntime", "BasePredictor", "CampaignCreate", "CampaignView",
    "CAMPAIGN_STATES", "JOB_STATES", "CampaignFilter", "JobFilter", "MeasurementFilter", "Paging",
    "DeviceInfo", "DeviceView", "ErrorBody", "FailureRecorded", "FieldError", "FarmStatus", "FitRequest",
    "FitStarted", "Heartbeat",
    "JobFailure", "JobLease", "JobRelease", "JobReleased", "JobResult", "JobSettings", "JobView",
    "KernelFitRequest", "KernelPrediction", "LeaseRequest", "LeaseResponse", "MeasurementRow",
    "MeasurementStats", "MeasurementSummary", "NetworkCorrection", "NetworkSubmitted", "Ok", "OnnxPrediction", "OtherTeamJob",
    "Page", "PredictRequest", "PredictResponse", "PredictorDetail", "PredictorRef", "PredictorView",
    "ResultRecorded", "RuntimeSettings", "Statistic", "TeamCreate", "TeamCreated", "TokenCreate",
    "TokenCreated", "TokenList", "TokenView", "runtime_key",
]  # fmt: skip

T = TypeVar("T")
Statistic = Literal["p10_ms", "median_ms", "mean_ms"]  # per-config latency a predictor can learn


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where the bad value is: 'body', 'query' or 'path', then the field")
    msg: str
    type: str | None = None


class ErrorBody(BaseModel):
    """Every error answer (4xx, and 503 from ``/readyz``): a message, or for a request that breaks
    the schema one entry per bad field."""

    detail: str | list[FieldError] = Field(description="what is wrong and how to fix it")


class Ok(_Answer):
    """``{"ok": true}``: liveness, readiness (``/readyz`` adds the answering process's ``pid``), an accepted heartbeat."""

    ok: bool = True


class Page(_Answer, Generic[T]):
    """One page of a listing: ``items`` plus the paging the server applied."""

    items: list[T]
    total: int
    limit: int
    offset: int = 0


# --- listings: paging and filters (query parameters) ------------------------------------------

CAMPAIGN_STATES = ("exporting", "running", "done", "failed", "cancelled")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


class Paging(_Body):
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=2**62)


class CampaignFilter(Paging):
    state: str | None = Field(None, pattern="^(" + "|".join(CAMPAIGN_STATES) + ")$")
    device_class: str | None = Field(None, max_length=200)
    team: str | None = Field(None, max_length=200, description="team name (admin only)")


class JobFilter(Paging):
    campaign_id: int | None = Field(None, ge=1, le=2**62)
    state: str | None = Field(None, pattern="^(" + "|".join(JOB_STATES) + ")$")
    device_class: str | None = Field(None, max_length=200)
    kind: str | None = Field(None, max_length=32, description="block kind, or 'network' for uploads")


class MeasurementFilter(_Body):
    campaign_id: int | None = Field(None, ge=1, le=2**62)
    device_class: str | None = Field(None, max_length=200)
    runtime: RuntimeText | None = None
    kind: str | None = Field(None, max_length=32)
    limit: int = Field(100_000, ge=1, le=1_000_000)
    offset: int = Field(0, ge=0, le=2**62)
    samples: bool = Field(True, description="include every per-run sample")


# --- farm and devices ----------------------------------------------------------------------


class FarmStatus(_Answer):
    """``jobs_per_minute``: jobs finished over the last 10 minutes; ``predictors``: (device class,
    runtime) pairs with a ready predictor."""

    devices_online: int = 0
    queue_depth: int = 0
    running: int = 0
    jobs_per_minute: float = 0.0
    failures_last_hour: int = 0
    predictors: int = 0


# --- jobs and measurements -----------------------------------------------------------------


class MeasurementSummary(_Answer):
    """A job's measurement in brief (``GET /v1/measurements`` has every column and sample)."""

    id: int | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    std_ms: float | None = None
    runs: int | None = None
    serial: str | None = None
    tool: str | None = None
    unstable: bool | None = None


class JobView(_Answer):
    """A job as its team (or the admin, or an agent) sees it."""

    id: int
    state: str
    campaign_id: int | None = None
    team: str | None = None
    device_class: str | None = None
    runtime: str | None = None
    artifact_sha256: str | None = None
    kind: str | None = None
    name: str | None = None
    priority: int = 0
    attempts: int = 0
    error: str | None = None
    leased_by_device: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    predicted_ms: float | None = None
    measurement: MeasurementSummary | None = None


class OtherTeamJob(_Answer):
    """Another team's job on a device: that it is busy (which job, what kind), not whose model."""

    id: int
    state: str
    kind: str | None = None
    device_class: str | None = None
    team: None = None
    detail: str


class DeviceView(_Answer):
    """A device; ``temperature_c`` is its last recorded temperature, ``measured_today`` counts from
    midnight UTC."""

    serial: str
    device_class: str
    agent_id: str | None = None
    online: bool = False
    last_seen: datetime | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    temperature_c: float | None = None
    temperature_at: datetime | None = None
    current_job: OtherTeamJob | JobView | None = Field(None, union_mode="left_to_right")
    measured_today: int | None = None

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", ""))

    @property
    def runtimes(self) -> list[str]:
        """Runtimes the device's agent declared it can measure; empty: not declared."""
        return list(self.info.get("runtimes") or [])


class MeasurementRow(_Answer):
    """One stored measurement; ``samples_ms`` only when asked for (``samples=true``)."""

    id: int
    job_id: int | None = None
    artifact_sha256: str | None = None
    kind: str
    device_class: str
    runtime: str
    serial: str
    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    warmup: int | None = None
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    tool: str | None = None
    tool_version: str | None = None
    unstable: bool = False
    created_at: datetime | None = None
    config: dict[str, Any] | None = None
    flags: list[str] | None = None
    samples_ms: list[float] | None = None


class ResultRecorded(_Answer):
    """``next_job``: the device's next job when the result asked for it (``lease_next``), None when
    nothing is queued for it or the agent may not lease for that device (``next_error`` says why:
    the result itself is stored either way)."""

    measurement_id: int
    next_job: JobLease | None = None
    next_error: str | None = None


class FailureRecorded(_Answer):
    """``state`` queued: the job is retried (``attempts`` so far); failed: it gave up."""

    state: str
    attempts: int
    error: str | None = None


class JobReleased(_Answer):
    state: str


class NetworkSubmitted(_Answer):
    """The job measuring an uploaded network; ``cached``: answered from a stored measurement or
    the team's own identical job; ``waiting``: why it may wait long, and how to cancel it."""

    job_id: int
    artifact_sha256: str
    cached: bool
    state: str
    waiting: str | None = None


# --- campaigns -----------------------------------------------------------------------------


class CampaignCreate(_Body):
    """Either a ``space`` (+ ``n``, ``sampling``, ``seed``) or explicit ``configs``; neither means
    the default space (the blocks of the search client's supernet)."""

    device_class: str = Field(min_length=1, max_length=200)
    runtime: RuntimeSettings | RuntimeText = Field(
        "onnxruntime", description="RuntimeSettings or 'onnxruntime/t1/cpu'"
    )
    space: SearchSpace | None = None
    configs: list[CampaignConfig] | None = Field(None, min_length=1, max_length=50_000)  # type: ignore[valid-type]
    family: Literal["blocks", "kernels"] = Field(
        "blocks", description="kernels: sample n one-kernel models (the kernel predictor's data) instead of blocks"
    )
    n: int = Field(100, ge=1, le=50_000)
    sampling: Literal["uniform", "stratified", "adaptive"] = Field(
        "stratified", description="adaptive: near the configs the latest predictor misses most (needs one)"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    priority: int = Field(0, ge=-1000, le=1000)
    warmup: Warmup = JOB_DEFAULTS.warmup
    runs: Runs = JOB_DEFAULTS.runs
    min_seconds: MinSeconds = JOB_DEFAULTS.min_seconds
    remeasure: float = Field(0.0, ge=0, le=1, description="share of new configs measured twice (noise floor)")
    refresh: bool = Field(
        False, description="measure every config again, even those already measured (a new session)"
    )
    max_attempts: int = Field(3, ge=1, le=20)
    wait_s: float = Field(
        30.0, ge=0, le=60, description="wait up to this long for the export before answering (0: answer at once)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> CampaignCreate:
        if self.space is not None and self.configs is not None:
            raise ValueError("give either 'space' (+ n) or 'configs', not both")
        return self

    def runtime_settings(self) -> RuntimeSettings:
        """The runtime as settings; :class:`BadRuntime` for text that names none."""
        if isinstance(self.runtime, RuntimeSettings):
            return self.runtime
        return RuntimeSettings.parse(runtime_key(self.runtime))

    def job_settings(self) -> JobSettings:
        return JobSettings(runtime=self.runtime_settings(), warmup=self.warmup, runs=self.runs,
                           min_seconds=self.min_seconds)  # fmt: skip


class CampaignView(_Answer):
    """A campaign's progress: job counts by state, ``exported`` configs so far, and ``eta_s``
    from its recent pace (None until two results are in, or while exporting)."""

    id: int
    state: str
    device_class: str
    runtime: str
    team: str | None = None
    n: int = 0
    exported: int | None = None
    sampling: str | None = None
    priority: int = 0
    jobs: int = 0
    cached: int = 0
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    eta_s: float | None = None
    error: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def progress(self) -> float:
        """Share of the campaign's jobs that finished (done or failed); 1.0 for a campaign without jobs."""
        return (self.done + self.failed) / self.jobs if self.jobs else 1.0

    @property
    def counts(self) -> dict[str, int]:
        """Job counts by state."""
        return {"queued": self.queued, "running": self.running, "done": self.done, "failed": self.failed}

    @property
    def finished(self) -> bool:
        """Nothing more to wait for: done, failed or cancelled, or exported with no job queued or
        running (a campaign still exporting is never finished, even with no live job yet)."""
        if self.state in ("done", "failed", "cancelled"):
            return True
        return self.state != "exporting" and self.queued + self.running == 0


# --- teams and tokens ----------------------------------------------------------------------


class TeamCreate(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")


class TeamCreated(_Answer):
    id: int
    name: str
    token: str


class TokenCreate(_Body):
    role: Literal["agent", "team", "admin"] = "agent"
    name: str = Field("", max_length=200)
    team_id: int | None = Field(None, ge=1, le=2**53, description="required for role=team, only there")

    @model_validator(mode="after")
    def _team_id_with_team_role(self) -> TokenCreate:
        if (self.role == "team") != (self.team_id is not None):
            raise ValueError(f"team_id is required for role 'team' and applies to it only (role {self.role!r})")
        return self


class TokenCreated(_Answer):
    role: str
    name: str
    token: str


class TokenView(_Answer):
    """A token as listed: never its secret nor its hash."""

    id: int
    team: str | None = None
    role: str
    name: str = ""
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenList(_Answer):
    items: list[TokenView]


# --- predictors ----------------------------------------------------------------------------


class BasePredictor(_Body):
    """A ready predictor of another device class (or runtime) to start a fit from: the new version
    starts from its weights and is fine-tuned on the fitted class's own measurements."""

    device_class: str = Field(min_length=1, max_length=200)
    runtime: RuntimeText = "onnxruntime"
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="default: its latest ready version")


class FitRequest(_Body):
    device_class: str = Field(min_length=1, max_length=200)
    runtime: RuntimeText = "onnxruntime"
    statistic: Statistic | None = Field(
        None, description="per-config latency to learn (default p10_ms: least disturbed by interference)"
    )
    base: BasePredictor | None = Field(
        None, description="adapt this predictor (e.g. of a device class measured at length) to the few "
                          "configs measured here instead of training from scratch"
    )


class AdaptedFrom(_Answer):
    """The predictor version a fit started from (``FitRequest.base`` resolved)."""

    id: int
    device_class: str
    runtime: str
    version: int


class FitStarted(_Answer):
    """A fit in a worker: poll ``GET /v1/predictors/{id}`` until ``state`` is ready."""

    id: int
    task_id: int
    state: str
    version: int
    device_class: str
    runtime: str
    adapted_from: AdaptedFrom | None = None


class PredictorView(_Answer):
    """One predictor version (no weights); ``beaten_by``: peers that beat it on its own held-out
    split (empty: the served MLP won)."""

    id: int
    device_class: str
    runtime: str
    version: int
    state: str = "ready"
    error: str | None = None
    created_at: datetime | None = None
    n_train: int | None = None
    n_test: int | None = None
    blob_sha256: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    beaten_by: list[Any] = Field(default_factory=list)
    adapted_from: AdaptedFrom | None = Field(None, description="the base it was adapted from; null: trained "
                                                               "from scratch")


class PredictorDetail(PredictorView):
    """A version with the feature ranges it was trained on (outside them it extrapolates)."""

    feature_ranges: dict[str, Any] = Field(default_factory=dict)


class KernelFitRequest(_Body):
    device_class: str = Field(min_length=1, max_length=200)
    runtime: str = Field("onnxruntime", max_length=100)
    calibrate: bool = Field(False, description="scale kernels by measured ÷ predicted over the blocks measured "
                                               "on this device (network-level correction)")


class KernelPredictorRef(_Answer):
    id: int
    version: int
    runtime: str


class KernelPrediction(_Answer):
    """One kernel of the model: its graph nodes, kind, dimensions and predicted latency."""

    nodes: list[str]
    op_types: list[str]
    runtime_op: str | None = None
    kind: str
    fn: str | None = None
    dims: dict[str, Any] = Field(default_factory=dict)
    predicted_ms: float | None = None
    extrapolated: bool = False
    error_pct: float | None = None


class OnnxPrediction(_Answer):
    """Total and per-kernel latency of an uploaded ONNX model; ``unsupported``: nodes no predictor
    covers; ``free``: nodes with no cost of their own; ``error_ms``: the held-out error bar."""

    predictor: KernelPredictorRef
    device_class: str
    runtime: str
    level: str | None = None
    input_shapes: dict[str, list[int]] = Field(default_factory=dict)
    total_ms: float
    overhead_ms: float = 0.0
    error_ms: float = 0.0
    kernels: list[KernelPrediction] = Field(default_factory=list)
    unsupported: list[dict[str, Any]] = Field(default_factory=list)
    extrapolated: bool = False
    free: list[dict[str, Any]] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
