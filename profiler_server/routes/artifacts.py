"""Artifact download (any token) and whole-network upload (team token) for a real measurement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select

from profiler_server import artifacts, jobs
from profiler_server.auth import admin_team
from profiler_server.db import Job
from profiler_server.deps import DatabaseDep, PrincipalDep, SessionDep, SettingsDep, TeamDep
from profiler_server.errors import TooLarge
from profiler_server.measurements import runtime_key
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses
from shared.schemas import RuntimeSettings, RuntimeText

router = APIRouter(prefix="/v1", tags=["artifacts"])
Sha256 = Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256")
CHUNK = 1 << 20


@router.get(
    "/artifacts/{sha256}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "the artifact's bytes (ONNX or TFLite)"}} | ANY_TOKEN | MISSING | INVALID,
)
def get_artifact(
    session: SessionDep, settings: SettingsDep, _: PrincipalDep, sha256: str = Sha256
) -> FileResponse:
    row, path = artifacts.open_artifact(session, settings.artifacts_dir, sha256)
    media = "application/octet-stream"
    return FileResponse(path, media_type=media, filename=f"{sha256}.{row.format}", headers={"ETag": sha256})


def _read_limited(upload: UploadFile, limit: int) -> bytes:
    chunks, total = [], 0
    while chunk := upload.file.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"upload is larger than the limit of {limit} bytes (RTSEG_MAX_UPLOAD_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/networks", status_code=201, responses=AUTH | BODY | error_responses(400))
def upload_network(
    file: Annotated[UploadFile, File(description="whole-network ONNX model")],
    device_class: Annotated[str, Form(min_length=1, max_length=200)],
    session: SessionDep,
    db: DatabaseDep,
    settings: SettingsDep,
    principal: TeamDep,
    runtime: Annotated[RuntimeText, Form()] = "onnxruntime",
    name: Annotated[str, Form(max_length=200)] = "",
    warmup: Annotated[int, Form(ge=0, le=10_000)] = 10,
    runs: Annotated[int, Form(ge=1, le=100_000)] = 50,
    min_seconds: Annotated[float, Form(ge=0, le=3600)] = 1.0,
    repeat: Annotated[bool, Form(description="a fresh job even if this network was measured before")] = False,
) -> dict:
    """Store the network and queue one measurement job (an identical live or done job is reused
    unless ``repeat``: measuring again is how a client sees the device's run-to-run spread)."""
    key = runtime_key(runtime)
    data = _read_limited(file, settings.max_upload_bytes)
    session.rollback()  # hold no transaction while checking and writing a large file
    artifact = artifacts.store_network(db, settings.artifacts_dir, data, name or file.filename or "")
    existing = session.scalar(
        select(Job).where(
            Job.artifact_sha256 == artifact.sha256, Job.device_class == device_class, Job.runtime == key,
            Job.state.in_(("queued", "running", "done")),
        ).order_by(Job.id.desc()).limit(1)
    )  # fmt: skip
    if existing is not None and not repeat:
        return {"job_id": existing.id, "artifact_sha256": artifact.sha256, "cached": True}
    team_id = principal.team_id if principal.team_id is not None else admin_team(session).id
    rs = RuntimeSettings.parse(key)
    job = jobs.new_job(
        artifact, team_id, device_class, rs, jobs.job_settings(rs, warmup, runs, min_seconds),
        priority=10, name=name, max_attempts=settings.max_attempts,
    )  # fmt: skip
    session.add(job)
    session.commit()
    return {"job_id": job.id, "artifact_sha256": artifact.sha256, "cached": False}
