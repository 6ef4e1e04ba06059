"""Artifact download and whole-network upload (team token) for a real measurement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import FileResponse

from profiler_server import artifacts, networks, tenancy
from profiler_server.deps import DatabaseDep, PrincipalDep, SessionDep, SettingsDep, TeamDep
from profiler_server.errors import TooLarge
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses
from shared.api import JOB_DEFAULTS, NetworkSubmitted, RuntimeText

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
    session: SessionDep, settings: SettingsDep, principal: PrincipalDep, sha256: str = Sha256
) -> FileResponse:
    """Block artifacts: any token. An uploaded network: its teams, the admin, and an agent while
    one of its devices holds a job measuring it."""
    row, path = artifacts.open_artifact(session, settings.artifacts_dir, sha256)
    tenancy.check_artifact_readable(session, principal, row)
    media = "application/octet-stream"
    return FileResponse(path, media_type=media, filename=f"{sha256}.{row.format}", headers={"ETag": sha256})


def read_limited_upload(upload: UploadFile, limit: int) -> bytes:
    chunks, total = [], 0
    while chunk := upload.file.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"upload is larger than the limit of {limit} bytes (RTSEG_MAX_UPLOAD_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/networks", response_model=NetworkSubmitted, status_code=201,
             responses=AUTH | BODY | error_responses(400, 429))
def upload_network(
    file: Annotated[UploadFile, File(description="whole-network model: ONNX for onnxruntime, .tflite for tflite")],
    device_class: Annotated[str, Form(min_length=1, max_length=200)],
    session: SessionDep,
    db: DatabaseDep,
    settings: SettingsDep,
    principal: TeamDep,
    runtime: Annotated[RuntimeText, Form()] = "onnxruntime",
    name: Annotated[str, Form(max_length=200)] = "",
    warmup: Annotated[int, Form(ge=0, le=10_000)] = JOB_DEFAULTS.warmup,
    runs: Annotated[int, Form(ge=1, le=100_000)] = JOB_DEFAULTS.runs,
    min_seconds: Annotated[float, Form(ge=0, le=3600)] = JOB_DEFAULTS.min_seconds,
    repeat: Annotated[bool, Form(description="a fresh job even if this network was measured before")] = False,
    # A plain number with 0 for "not sent": a multipart form has no null for an optional float.
    predicted_ms: Annotated[
        float, Form(ge=0, le=1e7, description="the latency the client predicted, shown beside the measurement (0: none)")
    ] = 0.0,
    blocks: Annotated[str, Form(max_length=4_000_000, description=(
        "the network as a JSON list of block configs (as POST /v1/predict takes them); its measurement then "
        "trains the predictor's network-level correction"))] = "",
) -> NetworkSubmitted:
    """Store the network and give the team a measurement job: its own identical job when it has
    one (unless ``repeat``: measuring again shows the device's run-to-run spread), a job answered
    at once from a stored measurement of the same network, or a new queued job. ``waiting`` says
    when no online agent serves the device class (the job waits; ``POST /v1/jobs/{id}/cancel``)."""
    block_list = networks.parse_network_blocks(blocks)
    data = read_limited_upload(file, settings.max_upload_bytes)
    request = networks.NetworkRequest(device_class, runtime, name or file.filename or "", warmup, runs,
                                      min_seconds, repeat, predicted_ms or None, block_list)  # fmt: skip
    return networks.submit_network(session, db, settings, principal, data, request)
