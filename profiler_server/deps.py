"""FastAPI dependencies, declared once. Routers (``profiler_server.routes``) use:

- ``SessionDep``: a SQLAlchemy ``Session`` for this request. Nothing is committed for you: call
  ``session.commit()`` after a write. On SQLite every transaction is ``BEGIN IMMEDIATE`` (see
  ``db/engine.py``) on a single pooled connection, so keep transactions short, never hold one
  across slow work (training), and never open a second session while one is open in the same
  thread (it would wait for the first: pass the session down instead).
- ``SettingsDep``: the app's ``Settings``. ``DatabaseDep``: the app's ``Database``
  (``db.transaction()`` is a commit-on-success context manager for worker threads).
  ``PredictorDep``: the app's ``PredictorService`` (fits and predictions).
- ``PrincipalDep`` (any valid token), ``AgentDep``, ``TeamDep`` (team or admin), ``AdminDep``:
  authenticate the bearer token and check its role (401 missing/unknown token, 403 wrong role).
- Outside a request (worker threads, hooks): what ``create_app`` handed them (the database, the
  predictor service), never a global.

Predictor reads need no token; measurements need one (see ``tenancy``); every write does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from profiler_server.auth import Principal, authenticate, require_role
from profiler_server.db import Database
from profiler_server.predictor.service import PredictorService
from profiler_server.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="token from POST /v1/teams, /v1/tokens or the admin")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.db


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.db.sessionmaker() as session:
        yield session


async def get_predictor(request: Request) -> PredictorService:
    return request.app.state.predictor


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
PredictorDep = Annotated[PredictorService, Depends(get_predictor)]
# scope="function": the session closes (and its connection returns to the pool) as soon as the
# endpoint returns, not after a streamed response has been sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_principal(request: Request, session: SessionDep, creds: Credentials) -> Principal:
    return authenticate(session, creds.credentials if creds else None, request.app.state.token_cache)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_agent(principal: PrincipalDep) -> Principal:
    return require_role(principal, "agent")


def get_team(principal: PrincipalDep) -> Principal:
    return require_role(principal, "team")


def get_admin(principal: PrincipalDep) -> Principal:
    return require_role(principal, "admin")


AgentDep = Annotated[Principal, Depends(get_agent)]
TeamDep = Annotated[Principal, Depends(get_team)]
AdminDep = Annotated[Principal, Depends(get_admin)]
