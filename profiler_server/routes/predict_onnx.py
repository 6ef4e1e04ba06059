"""Latency of any ONNX model: ``POST /v1/predict/onnx`` (kernel decomposition + kernel predictor)
and ``POST /v1/kernel-predictors`` (fit a new kernel predictor version now)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from profiler_server.deps import DatabaseDep, PrincipalDep, SessionDep, SettingsDep, TeamDep
from profiler_server.errors import BadRequest
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, error_responses
from profiler_server.predictor import kernel_predictor, store
from profiler_server.routes.artifacts import read_limited_upload
from shared.api import KernelFitRequest, OnnxPrediction, PredictorView, runtime_key
from shared.kernels import DecompositionError, decompose, parse_input_shape

router = APIRouter(prefix="/v1", tags=["predictors"])
MAX_ONNX_BYTES = 256 * 1024 * 1024  # a model bigger than this is refused (413) before it is parsed


def predict_model(db: Any, data: bytes, device_class: str, runtime: str, input_shape: str | None) -> OnnxPrediction:
    """Decompose the model, predict each kernel; every failure is a 4xx with what to fix."""
    row, predictor = kernel_predictor.latest(db, device_class, runtime)  # 404 first: no work without one
    try:
        shape = parse_input_shape(input_shape) if input_shape else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    try:
        parts = decompose(data, shape, level=predictor.level)
    except DecompositionError as exc:
        raise BadRequest(str(exc)) from exc
    if not parts.kernels:
        ops = sorted({u["op_type"] for u in parts.unsupported}) or ["none"]
        raise BadRequest(f"the model uses no known kernel (ops: {', '.join(ops)}); nothing to predict")
    answer = predictor.predict(parts)
    if not answer["kernels"]:
        raise BadRequest("none of the model's kernels has been measured on this device class: "
                         + kernel_predictor.kernel_campaign_hint(device_class, row.runtime.removeprefix("kernels:")))
    return OnnxPrediction(
        predictor={"id": row.id, "version": row.version, "runtime": row.runtime},
        device_class=device_class,
        runtime=runtime_key(runtime),
        level=predictor.level,
        input_shapes=parts.input_shapes,
        **answer,
        free=parts.free,
        counts=parts.counts(),
    )


@router.post("/predict/onnx", response_model=OnnxPrediction, responses=ANY_TOKEN | BODY | error_responses(404, 409))
async def predict_onnx(
    file: Annotated[UploadFile, File(description="the ONNX model")],
    device_class: Annotated[str, Form(min_length=1, max_length=200)],
    db: DatabaseDep,
    session: SessionDep,
    settings: SettingsDep,
    _: PrincipalDep,
    runtime: Annotated[str, Form(max_length=100)] = "onnxruntime",
    input_shape: Annotated[str | None, Form(max_length=100, description="first input's shape, e.g. 1x3x512x1024")] = None,
) -> OnnxPrediction:
    """Total and per-kernel predicted latency of an uploaded ONNX model, with the kernels no
    predictor covers, extrapolation flags and an error bar (held-out error of each kernel kind)."""
    data = read_limited_upload(file, min(settings.max_upload_bytes, MAX_ONNX_BYTES))
    session.rollback()  # SQLite serves one connection: the worker below opens its own sessions
    return await run_in_threadpool(predict_model, db, data, device_class, runtime, input_shape)


@router.post("/kernel-predictors", response_model=PredictorView, status_code=201,
             responses=AUTH | BODY | error_responses(404, 409))
async def fit_kernel_predictor(body: KernelFitRequest, db: DatabaseDep, session: SessionDep, settings: SettingsDep,
                               _team: TeamDep) -> PredictorView:
    """Fit a kernel predictor version from every kernel measurement of (device class, runtime);
    ``calibrate``: also scale it on the blocks measured there (network-level correction)."""
    session.rollback()  # SQLite serves one connection: the fit opens its own sessions
    row = await run_in_threadpool(kernel_predictor.fit_and_store, db, body.device_class, body.runtime, "p10_ms",
                                  settings.artifacts_dir if body.calibrate else None)
    return store.version_view(row)
