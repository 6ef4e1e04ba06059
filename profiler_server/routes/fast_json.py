"""Request parsing for plain Starlette routes that serve a hot path ahead of FastAPI's route of the
same path (which stays in place and documents it): the same checks and the same 422 bodies as
FastAPI's route, at a fraction of the cost.

FastAPI's per-request machinery (dependency solving, scope bookkeeping, route matching through
included routers, its telemetry middleware's hooks) cost more than the whole lease or result
transaction. Here pydantic validates the raw bytes in one pass, and only a request that fails
pays for building FastAPI's error shapes.
"""

from __future__ import annotations

import email.message
import json
from typing import Annotated, Any, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.routing import Route

M = TypeVar("M", bound=BaseModel)
_ROW_ID = TypeAdapter(Annotated[int, Field(ge=1, le=2**62)])  # the routes' ``Path(ge=1, le=2**62)``
_NOT_AN_OBJECT = {"type": "model_attributes_type", "loc": ("body",), "input": None,
                  "msg": "Input should be a valid dictionary or object to extract fields from"}  # fmt: skip


def bearer_token(request: Request) -> str | None:
    """The bearer token of ``Authorization: Bearer <token>`` (None otherwise), as FastAPI's
    ``HTTPBearer(auto_error=False)`` reads it."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    if not scheme or not credentials or scheme.lower() != "bearer":
        return None
    return credentials


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False  # FastAPI's strict content type: a body without one is not read as JSON
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _body_errors(model: type[M], raw: bytes, content_type: str | None) -> tuple[M | None, list[dict]]:
    if not raw:
        return None, [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    if not _is_json(content_type):
        return None, [_NOT_AN_OBJECT]
    try:
        return model.model_validate_json(raw), []
    except ValidationError:
        pass
    # The rare failing body pays for FastAPI's way: decode, then validate the Python value.
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as bad:
        return None, [{"type": "json_invalid", "loc": ("body", bad.pos), "msg": "JSON decode error",
                       "input": {}, "ctx": {"error": bad.msg}}]  # fmt: skip
    except UnicodeDecodeError:
        return None, [{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "input": {}}]
    try:
        return model.model_validate(value, from_attributes=True), []
    except ValidationError as exc:
        return None, [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]


def validate_body(model: type[M], raw: bytes) -> M:
    """A JSON body as ``model`` for a route that reads its own body without checking its content
    type; one :class:`RequestValidationError` with FastAPI's 422 shapes otherwise."""
    body, errors = _body_errors(model, raw, "application/json")
    if errors:
        raise RequestValidationError(errors, body=raw)
    return body


async def parse_request(
    request: Request, model: type[M], path_row_id: str | None = None
) -> tuple[M, int | None]:
    """The JSON body as ``model`` and, when named, the path parameter ``path_row_id`` as a row
    id; one :class:`RequestValidationError` listing every problem otherwise (a 422 from the app's
    handler, as FastAPI's route would answer)."""
    errors: list[dict[str, Any]] = []
    row_id = None
    if path_row_id is not None:
        try:
            row_id = _ROW_ID.validate_python(request.path_params[path_row_id])
        except ValidationError as exc:
            errors += [{**e, "loc": ("path", path_row_id)} for e in exc.errors(include_url=False)]
    raw = await request.body()
    body, body_errors = _body_errors(model, raw, request.headers.get("content-type"))
    errors += body_errors
    if errors:
        raise RequestValidationError(errors, body=raw)
    return body, row_id


async def read_request(
    request: Request, model: type[BaseModel], path_row_id: str | None = None
) -> tuple[bytes, int | None]:
    """The raw JSON body and, when named, the path parameter ``path_row_id`` as a row id, for a
    call whose body another process validates as ``model``; :func:`parse_request`'s 422 when the
    content type is not JSON or the row id is invalid."""
    raw = await request.body()
    row_id = None
    if path_row_id is not None:
        text = request.path_params[path_row_id]
        row_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
    if (path_row_id is not None and not row_id) or not raw or not _is_json(request.headers.get("content-type")):
        # FastAPI's checks: the 422 listing every problem (or a long row id that is valid after all)
        _, row_id = await parse_request(request, model, path_row_id)
    return raw, row_id


class NamedRoute(Route):
    """A Starlette route that puts itself in the request's scope, as FastAPI's routes do (FastAPI's
    router does not for plain routes): the latency histogram labels each request by its route."""

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)
