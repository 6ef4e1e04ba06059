"""HTTP endpoints of the predictor: predict, list/fit versions, download weights."""

from __future__ import annotations

import contextlib
import functools
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from profiler_server.db import PredictorVersion
from profiler_server.deps import PredictorDep, SessionDep, SettingsDep, TeamDep
from profiler_server.errors import NotFound, TooManyRequests
from profiler_server.openapi import AUTH, BODY, INVALID, MISSING, error_responses, json_body
from profiler_server.predictor import store
from profiler_server.predictor.columnar import NotValidAsSent, decode_body
from profiler_server.predictor.service import Loaded, PredictorService
from profiler_server.routes.fast_json import NamedRoute, validate_body
from shared.api import (
    FitRequest,
    FitStarted,
    NetworkCorrection,
    PredictorDetail,
    PredictorView,
    PredictRequest,
    PredictResponse,
    RuntimeText,
    runtime_key,
)

router = APIRouter(prefix="/v1", tags=["predictors"])
INLINE_BLOCKS = 64  # up to this many blocks are predicted on the event loop (well under a millisecond)
# bytes: bodies up to this size are parsed once and their answers remembered; larger ones are
# validated as columns in a worker thread
SMALL_BODY = 2048
PredictorId = Annotated[int, Path(ge=1, le=2**62, description="id from GET /v1/predictors")]


def _version_or_404(session: SessionDep, predictor_id: int) -> PredictorVersion:
    row = session.get(PredictorVersion, predictor_id)
    if row is None:
        raise NotFound(f"no predictor with id {predictor_id}; GET /v1/predictors lists them")
    return row


@functools.lru_cache(maxsize=4096)
def _parse_small(raw: bytes) -> PredictRequest:
    """A small body parsed once: a search sends the same few hundred bodies again and again, and
    validating one cost more than predicting it. Equal bytes validate to equal requests; a body
    that fails raises every time (exceptions are not cached). Callers must not modify the result."""
    return validate_body(PredictRequest, raw)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=MISSING | BODY,
    openapi_extra=json_body(PredictRequest, "blocks to predict on a device class and runtime"),
)
async def predict(request: Request) -> Response:
    """Per-block and total latency of ``blocks`` on ``device_class`` with ``runtime``."""
    # The hottest route reads its own body: FastAPI's body handling (decode, content-type parsing,
    # dependency solving) cost more than the prediction itself.
    raw = await request.body()
    svc: PredictorService = request.app.state.predictor
    if len(raw) > SMALL_BODY:  # a large batch: parsed and predicted off the event loop
        return _json(await run_in_threadpool(_answer_large, svc, raw))
    body = _parse_small(raw)
    if body.network:
        return await _predict_network(svc, body)
    loaded = None
    if body.predictor_version is None and len(body.blocks) <= INLINE_BLOCKS:
        with contextlib.suppress(ValueError):
            loaded = svc.cached(body.device_class, runtime_key(body.runtime))
    if loaded is None:  # database lookups stay off the event loop
        return _json(await run_in_threadpool(lambda: svc.predict(body).model_dump_json()))
    return _json(_answer_small(svc, loaded, raw, body))


def _json(text: str | bytes) -> Response:
    return Response(text, media_type="application/json")


def _answer_small(svc: PredictorService, loaded: Loaded, raw: bytes, body: PredictRequest) -> str:
    """A small batch with its predictor in memory, answered on the event loop (cheaper than a thread
    hop). A version's answer to the same bytes never changes, so a repeated body is answered from
    that version's memory."""
    text = loaded.answers.get(raw)
    if text is None:
        text = svc.predict(body, loaded).model_dump_json()
        loaded.remember_answer(raw, text)
    return text


def _answer_large(svc: PredictorService, raw: bytes) -> str:
    """A large batch: decoded as sent and its new blocks validated as columns when it is all
    valid as sent; otherwise (or to order a 404 after a 422, as the models do) ``PredictRequest``
    validates it, which gives the exact 422."""
    decoded = decode_body(raw)
    if decoded is not None and not getattr(decoded.envelope, "network", False):  # network: the plain path
        with contextlib.suppress(NotValidAsSent, NotFound):
            return svc.predict_decoded(decoded).model_dump_json()
    return svc.predict(validate_body(PredictRequest, raw)).model_dump_json()


async def _predict_network(svc: PredictorService, body: PredictRequest) -> Response:
    """``"network": true``: the correction may be refitted first (database reads), so off the event loop."""
    return _json(await run_in_threadpool(lambda: svc.predict(body).model_dump_json()))


def add_fast_predict_route(app: FastAPI) -> None:
    """Serve ``POST /v1/predict`` through a plain Starlette route matched before FastAPI's routes.

    FastAPI's route machinery (dependency solving, scope bookkeeping) cost a third of a
    single-block prediction although the endpoint takes only the request; the FastAPI route of
    the same path stays in place for the OpenAPI document. Errors go through the app's exception
    handlers either way (same status codes and bodies)."""
    app.router.routes.insert(0, NamedRoute("/v1/predict", predict, methods=["POST"], name="predict"))


@router.get("/predictors", response_model=list[PredictorView], responses=INVALID)
def list_predictors(
    session: SessionDep,
    device_class: Annotated[str | None, Query(max_length=200)] = None,
    runtime: Annotated[RuntimeText | None, Query()] = None,
) -> list[PredictorView]:
    key = runtime_key(runtime) if runtime is not None else None
    return [store.version_view(r) for r in store.list_versions(session, device_class, key)]


@router.post("/predictors", response_model=FitStarted, status_code=202,
             responses=AUTH | BODY | MISSING | error_responses(409, 429))
def start_fit(
    body: FitRequest, predictor: PredictorDep, session: SessionDep, settings: SettingsDep, team: TeamDep
) -> FitStarted:
    """Fit a new version in a worker; poll ``GET /v1/predictors/{id}`` until ``state`` is ready.
    With ``base``, the version starts from that predictor's weights and is fine-tuned on the
    measurements here (404: no such base; 422: one that cannot be adapted, and why).
    429 when the team already has ``team_max_running_fits`` fits queued or fitting."""
    runtime = runtime_key(body.runtime)
    if team.team_id is not None and store.running_fits(session, team.team_id) >= settings.team_max_running_fits:
        raise TooManyRequests(
            f"your team already has {settings.team_max_running_fits} predictor fits queued or fitting "
            "(RTSEG_TEAM_MAX_RUNNING_FITS): wait for one to finish (GET /v1/predictors)"
        )
    row = predictor.start_fit(body.device_class, runtime, session, body.statistic, team.team_id, body.base)
    return FitStarted(id=row.id, task_id=row.id, state=row.state, version=row.version,
                      device_class=row.device_class, runtime=row.runtime,
                      adapted_from=row.metrics.get("adapted_from"))  # fmt: skip


@router.get("/predictors/{predictor_id}", response_model=PredictorDetail, responses=MISSING | INVALID)
def get_predictor(predictor_id: PredictorId, session: SessionDep) -> PredictorDetail:
    return store.version_detail(_version_or_404(session, predictor_id))


@router.get("/predictors/{predictor_id}/network-correction", response_model=NetworkCorrection,
            responses=MISSING | INVALID)
def get_network_correction(predictor_id: PredictorId, predictor: PredictorDep) -> NetworkCorrection:
    """The version's network-level correction, refitted first when the farm measured networks since."""
    return predictor.network_correction(predictor_id)


@router.get(
    "/predictors/{predictor_id}/weights",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "the predictor's weights and metadata"},
               304: {"description": "If-None-Match names this version: the cached copy is current"}}
    | MISSING | INVALID,
)
def get_weights(
    predictor_id: PredictorId,
    session: SessionDep,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """Bytes of ``shared.predictor.dump_predictor``: weights, feature spec, version and meta."""
    row = _version_or_404(session, predictor_id)
    if row.state != "ready" or row.blob is None:
        raise NotFound(f"predictor {predictor_id} is {row.state}, it has no weights")
    etag = f'"{row.blob_sha256}"'
    headers = {"ETag": etag, "X-Predictor-Version": str(row.version), "X-Predictor-Id": str(row.id),
               "Cache-Control": "public, max-age=31536000, immutable"}  # a version never changes
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")] + ["*"]:
        return Response(status_code=304, headers=headers)
    return Response(row.blob, media_type="application/octet-stream", headers=headers)
