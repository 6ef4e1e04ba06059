"""Wire schemas shared by the server, the phone-agent and the search client (pydantic v2).

Bounds on every number keep hostile input out; the server answers 422 for anything outside them.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)
from pydantic.types import Strict
from pydantic_core import PydanticCustomError

from shared.config import BlockConfig
from shared.network_correction import NetworkCorrection

Runtime = Literal["onnxruntime", "tflite"]
# What RuntimeSettings.parse accepts: a runtime name, or 'runtime/tN/delegate' with 1 <= N <= 64.
RUNTIME_PATTERN = r"^(onnxruntime|tflite)(/t0*([1-9]|[1-5][0-9]|6[0-4])/(cpu|xnnpack|gpu|nnapi|qnn))?$"
RuntimeText = Annotated[
    str, StringConstraints(pattern=RUNTIME_PATTERN, max_length=100), Field(description="'onnxruntime' or 'onnxruntime/t1/cpu'")
]
SHA256 = Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256 of the artifact bytes")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _json_number(value: object) -> object:
    # JSON types as the schema states them: true/false and "5" are not numbers (pydantic's lax
    # mode would read them as 1/0 and 5); 3.0 is an integer in JSON Schema and stays accepted.
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a JSON number, not {kind}", {"kind": type(value).__name__})
    return value


JsonInt = Annotated[int, BeforeValidator(_json_number)]
JsonFloat = Annotated[float, Strict()]  # strict float: ints pass, true/false and text do not (in Rust)


class _Request(_Model):
    """A body a client sends (its numbers are ``JsonInt`` / ``JsonFloat``, its flags StrictBool)."""


# --- devices and runtimes ------------------------------------------------------------------


class RuntimeSettings(_Model):
    """A runtime plus the settings that change latency; part of every cache/predictor key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    runtime: Runtime = "onnxruntime"
    threads: int = Field(1, ge=1, le=64)
    delegate: Literal["cpu", "xnnpack", "gpu", "nnapi", "qnn"] = "cpu"

    def key(self) -> str:
        """``onnxruntime/t1/cpu`` — the string stored with measurements and predictors."""
        return f"{self.runtime}/t{self.threads}/{self.delegate}"

    @classmethod
    def parse(cls, text: str) -> RuntimeSettings:
        """Accept a bare runtime name (defaults for the rest) or a full ``key()`` string."""
        parts = text.split("/")
        if len(parts) == 1:
            return cls(runtime=parts[0])
        if len(parts) == 3 and parts[1].startswith("t") and parts[1][1:].isdigit():
            return cls(runtime=parts[0], threads=int(parts[1][1:]), delegate=parts[2])
        raise ValueError(f"runtime {text!r} is neither a runtime name nor 'runtime/tN/delegate'")


class BadRuntime(ValueError):
    """A runtime text that is neither a runtime name nor ``runtime/tN/delegate`` (the server answers 400)."""


@functools.lru_cache(maxsize=1024)  # on every prediction; an error is not cached
def runtime_key(text: str) -> str:
    """``onnxruntime`` or ``onnxruntime/t1/cpu`` -> the key stored with measurements and predictors."""
    try:
        return RuntimeSettings.parse(text).key()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        raise BadRuntime(f"bad runtime {text!r}: {exc}") from exc


# How many warm-up and timed runs, and the least time of the timed runs: bounds for every request.
Warmup = Annotated[int, Field(ge=0, le=10_000)]
Runs = Annotated[int, Field(ge=1, le=100_000)]
MinSeconds = Annotated[float, Field(ge=0, le=3600)]


class JobSettings(_Model):
    """How one job is measured, as stored with the job (defaults stated here only). Stored JSON
    may carry more (a campaign keeps its configs beside these); reading it ignores the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    runtime: RuntimeSettings = RuntimeSettings()
    warmup: Warmup = 10
    runs: Runs = 50
    min_seconds: MinSeconds = 1.0
    predicted_ms: float | None = Field(None, description="the client's prediction, shown beside the measurement")

    def stored(self) -> dict:
        """The JSON kept in the job row (``predicted_ms`` only when given)."""
        return self.model_dump(exclude_none=True)


JOB_DEFAULTS = JobSettings()


class DeviceInfo(_Request):
    serial: str = Field(min_length=1, max_length=128)
    device_class: str = Field(min_length=1, max_length=200)
    kind: Literal["adb", "host"] = "adb"
    model: str = ""
    manufacturer: str = ""
    soc: str = ""
    android_release: str = ""
    abi: str = ""
    cpu_max_freq_khz: list[JsonInt] = Field(default_factory=list, max_length=64)
    thermal_zones: JsonInt = Field(0, ge=0, le=1000)
    runtimes: list[Runtime] = Field(
        default_factory=list, max_length=8,
        description="runtimes the agent can measure on this device; empty: not declared (an older agent)")


# A measurement flag: the host runner left onnxruntime's NCHWc layout conversions (and the helper
# nodes below) out of a one-kernel model's samples (followed by the median ms per run it took off).
REORDERS_EXCLUDED_FLAG = "layout_reorders_excluded_ms="
# One-kernel models name the nodes that only put the kernel in the layout it has inside a whole model
# (e.g. a 1x1 depthwise conv ahead of an NCHWc Upsample) with this prefix; runners that profile leave
# their time out, as they do the layout conversions.
KERNEL_HELPER_PREFIX = "aux_"
# Measurement flags of a one-kernel model profiled by its runtime: its samples are the kernel's own
# node time (``clock=ort-node``); the run's median time outside any node and how many nodes it ran.
NODE_CLOCK = "ort-node"
RUN_GAP_FLAG = "run_gap_ms="
RUN_NODES_FLAG = "run_nodes="


class MeasurementStats(_Request):
    """What one measurement of one model on one device produced (every per-run sample kept)."""

    median_ms: JsonFloat = Field(gt=0, le=1e7)
    mean_ms: JsonFloat = Field(gt=0, le=1e7)
    p10_ms: JsonFloat = Field(gt=0, le=1e7)
    p90_ms: JsonFloat = Field(gt=0, le=1e7)
    std_ms: JsonFloat = Field(ge=0, le=1e7)
    runs: JsonInt = Field(ge=1, le=1_000_000)
    samples_ms: list[JsonFloat] = Field(default_factory=list, max_length=100_000)
    warmup: JsonInt = Field(0, ge=0, le=100_000)
    temp_before_c: Annotated[JsonFloat, Field(ge=-50, le=200)] | None = None
    temp_after_c: Annotated[JsonFloat, Field(ge=-50, le=200)] | None = None
    tool: str = Field("", max_length=200)
    tool_version: str = Field("", max_length=200)
    flags: list[str] = Field(default_factory=list, max_length=100)
    unstable: StrictBool = False
    attempts: JsonInt = Field(1, ge=1, le=100)


# --- agent protocol ------------------------------------------------------------------------


class AgentRegister(_Request):
    name: str = Field(min_length=1, max_length=200)
    devices: list[DeviceInfo] = Field(max_length=256)
    agent_id: str | None = Field(
        None, max_length=64, description="re-register under this id (kept when registered with the same token)"
    )


class AgentRegistered(_Model):
    agent_id: str
    heartbeat_s: float


class Heartbeat(_Request):
    agent_id: str = Field(max_length=64)
    serials: list[str] = Field(default_factory=list, max_length=256)


class LeaseRequest(_Request):
    agent_id: str = Field(max_length=64)
    serial: str = Field(min_length=1, max_length=128)


class JobLease(_Model):
    """A leased job; ``artifact_url`` is relative to the server root."""

    job_id: int
    lease_id: str
    lease_expires_at: datetime
    artifact_sha256: str = SHA256
    kind: str = Field("", max_length=32, description="what the artifact is: a block kind, 'kernel' or 'network'")
    artifact_url: str
    format: Literal["onnx", "tflite"]
    settings: RuntimeSettings
    warmup: int = JOB_DEFAULTS.warmup
    runs: int = JOB_DEFAULTS.runs
    min_seconds: float = JOB_DEFAULTS.min_seconds


class LeaseResponse(_Model):
    job: JobLease | None = None


class JobResult(_Request):
    """A measurement of a leased job. With ``lease_next`` the answer also carries the device's next
    job (``ResultRecorded.next_job``), leased in the same transaction as if ``POST /v1/jobs/lease``
    had been called with ``agent_id`` and ``serial``: one call per measured job instead of two."""

    lease_id: str = Field(max_length=64)
    serial: str = Field(max_length=128)
    stats: MeasurementStats
    lease_next: StrictBool = False
    agent_id: str | None = Field(None, max_length=64, description="the agent leasing the next job (lease_next)")

    @model_validator(mode="after")
    def _next_needs_agent(self) -> JobResult:
        if self.lease_next and self.agent_id is None:
            raise ValueError("lease_next needs agent_id: the agent that leases the device's next job")
        return self


class JobFailure(_Request):
    lease_id: str = Field(max_length=64)
    serial: str = Field(max_length=128)
    agent_id: str | None = Field(None, max_length=64, description="the agent holding the lease")
    error: str = Field(max_length=2000)
    output: str = Field("", max_length=200_000)
    retry: StrictBool = True  # False: the model itself is at fault, don't retry elsewhere


class JobRelease(_Request):
    lease_id: str = Field(max_length=64)
    agent_id: str | None = Field(None, max_length=64, description="the agent holding the lease")


# --- prediction ----------------------------------------------------------------------------


class PredictRequest(_Request):
    device_class: str = Field(min_length=1, max_length=200)
    runtime: RuntimeText = "onnxruntime"
    blocks: list[BlockConfig] = Field(min_length=1, max_length=100_000)
    predictor_version: Annotated[int, Field(ge=1), BeforeValidator(_json_number)] | None = None
    network: StrictBool = Field(False, description="the blocks form one network: the answer adds network_ms, "
                                                   "the network-level corrected total, beside the sum (total_ms)")


class PredictorRef(BaseModel):
    id: int
    version: int


class PredictResponse(BaseModel):
    predictor: PredictorRef
    block_ms: list[float]
    total_ms: float
    extrapolated: list[bool] = Field(default_factory=list)
    network_ms: float | None = Field(None, description="with network: true, the whole network's latency: the sum "
                                                       "corrected by the predictor's network-level model")
    network_correction: NetworkCorrection | None = Field(None, description="with network: true, the correction "
                                                         "applied (model 'sum': none fitted yet, and why)")
