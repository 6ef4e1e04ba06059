"""What the OpenAPI document says about errors: one body model for every error answer, and
``error_responses(...)`` for a route's ``responses=`` so that each route lists the 4xx it can give.

Every error body is ``{"detail": ...}``: a message string, or for a request that breaks the
schema a list of ``{loc, msg, type}`` naming each bad field.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from shared.api import ErrorBody

ERROR_DESCRIPTIONS = {
    400: "the body cannot be read (not JSON, not UTF-8), or content the schema cannot describe is "
    "wrong (a file that is not a valid model, a request beyond this server's configured limits)",
    401: "missing, unknown or revoked bearer token",
    403: "the token's role may not do this",
    404: "a resource named in the request does not exist (or belongs to another team)",
    409: "the request conflicts with the current state",
    413: "request body larger than this server accepts",
    422: "the request does not match the schema, or breaks a rule between fields",
    429: "a limit on this team's work is reached; retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``codes``, each with the error body model."""
    return {code: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# Sets that most routes share (combine with ``|``).
AUTH = error_responses(401, 403)
ANY_TOKEN = error_responses(401)
INVALID = error_responses(422)
BODY = error_responses(400, 413, 422)
MISSING = error_responses(404)


# Models that routes parse themselves (``json_body``), added to the document's components.
_SELF_PARSED: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """``openapi_extra=`` documenting a JSON body that the route reads and validates itself (hot
    paths: ``model.model_validate_json`` on the raw bytes costs a fraction of FastAPI's body
    handling). The app's document then names ``model`` as the body, as for a declared one."""
    _SELF_PARSED[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": ref}}}}  # fmt: skip


def add_self_parsed_schemas(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the schemas of the models named by ``json_body``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI's own, rebuilt when routes change
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _SELF_PARSED.items():
            if name not in schemas:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for def_name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(def_name, definition)
                schemas[name] = schema
        return document

    app.openapi = openapi  # type: ignore[method-assign]
