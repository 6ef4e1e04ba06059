"""Whole-network uploads: store the model, then give the asking team its own measurement job.

An identical live or done job of the same team is reused (unless ``repeat``). A network another
team already measured is answered from that measurement, copied into a job of the asking team
(see ``tenancy``). A device class that no online agent serves still gets its job, and the answer
says that it waits and how to cancel it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.orm import Session

from profiler_server import artifacts, jobs, tenancy
from profiler_server.auth import Principal, admin_team
from profiler_server.campaigns import check_team_queue
from profiler_server.db import Artifact, Database, Job, NetworkBlocks
from profiler_server.errors import BadRequest
from profiler_server.settings import Settings
from shared.api import JobSettings, NetworkSubmitted, RuntimeSettings, runtime_key
from shared.config import parse_blocks

NETWORK_PRIORITY = 10  # a finished search waits on its network: ahead of bulk block campaigns


@dataclass(frozen=True)
class NetworkRequest:
    device_class: str
    runtime: str
    name: str
    warmup: int
    runs: int
    min_seconds: float
    repeat: bool
    predicted_ms: float | None = None  # the client's prediction, shown beside the measurement
    blocks: list[dict] | None = None  # the network as block configs: trains the network-level correction


def parse_network_blocks(text: str) -> list[dict] | None:
    """The ``blocks`` form field (JSON list of block configs) as canonical dicts; BadRequest naming
    the first bad block. Empty text: no block list."""
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
        if not isinstance(raw, list) or not raw:
            raise ValueError("expected a non-empty JSON list of block configs")
        return [cfg.model_dump() for cfg in parse_blocks(raw)]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"blocks: block {where}: {first['msg']}") from None
    except ValueError as exc:
        raise BadRequest(f"blocks must be a JSON list of block configs as POST /v1/predict takes them: {exc}") from None


def record_blocks(session: Session, sha256: str, blocks: list[dict] | None) -> None:
    """Keep the block list of a network (the first one sent: the bytes fix the architecture)."""
    if blocks is not None and session.get(NetworkBlocks, sha256) is None:
        session.add(NetworkBlocks(artifact_sha256=sha256, blocks=blocks))


def submit_network(
    session: Session, db: Database, settings: Settings, principal: Principal, data: bytes, req: NetworkRequest
) -> NetworkSubmitted:
    key = runtime_key(req.runtime)
    rs = RuntimeSettings.parse(key)
    session.rollback()  # hold no transaction while checking and writing a large file
    fmt = "tflite" if rs.runtime == "tflite" else "onnx"
    artifact = artifacts.store_network(db, settings.artifacts_dir, data, req.name, fmt)
    team_id = principal.team_id if principal.team_id is not None else admin_team(session).id
    tenancy.add_owner(session, artifact.sha256, team_id)
    record_blocks(session, artifact.sha256, req.blocks)
    own = tenancy.own_network_job(session, team_id, artifact.sha256, req.device_class, key)
    if own is not None and not req.repeat:
        session.commit()
        return _answer(session, own, artifact, cached=True)
    check_team_queue(session, principal, 1, settings)
    job_settings = JobSettings(runtime=rs, warmup=req.warmup, runs=req.runs, min_seconds=req.min_seconds,
                               predicted_ms=req.predicted_ms)  # fmt: skip
    job = jobs.new_job(
        artifact, team_id, req.device_class, job_settings,
        priority=NETWORK_PRIORITY, name=req.name, max_attempts=settings.max_attempts,
    )  # fmt: skip
    session.add(job)
    session.flush()
    stored = None if req.repeat else tenancy.shared_measurement(session, artifact.sha256, req.device_class, key)
    if stored is not None:
        tenancy.copy_measurement(session, job, stored)
    session.commit()
    return _answer(session, job, artifact, cached=stored is not None)


def _answer(session: Session, job: Job, artifact: Artifact, cached: bool) -> NetworkSubmitted:
    waiting = waiting_note(session, job) if job.state == "queued" else None
    return NetworkSubmitted(job_id=job.id, artifact_sha256=artifact.sha256, cached=cached, state=job.state,
                            waiting=waiting)  # fmt: skip


def waiting_note(session: Session, job: Job) -> str | None:
    """Why a queued job may wait long (no online agent serves its class), and how to cancel it."""
    known, online = tenancy.device_class_known(session, job.device_class)
    if online:
        return None
    cancel = f"cancel it with POST /v1/jobs/{job.id}/cancel"
    if known:
        return f"every device of class {job.device_class!r} is offline: the job waits until one is back; {cancel}"
    classes = ", ".join(tenancy.known_device_classes(session)) or "none yet"
    return (f"no agent has registered a device of class {job.device_class!r} (known classes: {classes}): "
            f"the job waits until one does; {cancel}")  # fmt: skip
