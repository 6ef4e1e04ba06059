"""Bearer tokens: random secrets shown once, stored as sha256 hashes, each with a role.

Roles: ``admin`` (everything), ``team`` (campaigns, networks, predictor fits of its team),
``agent`` (register devices, heartbeat, lease, report). Tokens are 32 random bytes, so a plain
sha256 is enough to make a leaked database useless for logging in (no password stretching needed).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path

from sqlalchemy import Executable, bindparam, select, update
from sqlalchemy.orm import Session

from profiler_server.cache import TTLCache
from profiler_server.db import Team, Token, prepared, utcnow
from profiler_server.errors import Conflict, NotFound, ServerError
from shared.api import TokenView

log = logging.getLogger(__name__)
ROLES = ("admin", "team", "agent")


class AuthError(ServerError):
    """Missing/unknown token (401) or a token whose role may not do this (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


@dataclass(frozen=True)
class Principal:
    token_id: int
    role: str
    team_id: int | None
    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def issue_token(session: Session, role: str, name: str = "", team_id: int | None = None) -> str:
    """Create a token row and return the secret (the only time it is visible)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    token = new_token(role)
    session.add(Token(token_hash=hash_token(token), role=role, team_id=team_id, name=name))
    session.flush()
    return token


_TOUCH_EVERY = timedelta(seconds=60)  # how stale ``last_used_at`` may get


@functools.lru_cache(maxsize=1)
def _token_state() -> Executable:
    """Revocation and last use of one token by primary key, prebuilt (runs on every request)."""
    t = Token.__table__
    return select(t.c.revoked, t.c.last_used_at).where(t.c.id == bindparam("b_id"))


@functools.lru_cache(maxsize=1)
def _touch_token() -> Executable:
    t = Token.__table__
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"))
        .values(last_used_at=bindparam("b_now", type_=t.c.last_used_at.type))
    )


def authenticate(
    session: Session, token: str | None, cache: TTLCache | None = None, commit_touch: bool = True
) -> Principal:
    """The principal of a bearer token.

    ``cache`` keeps what never changes (hash -> id, role, team); whether the token is revoked is
    read from the database on every call (a primary-key lookup), so a revocation made by any server
    process takes effect on the next request everywhere. ``last_used_at`` is written at most once a
    minute; that write is committed at once, before the caller does anything with the session,
    unless ``commit_touch`` is False (work inside a savepoint: it commits with the caller's work)."""
    if not token:
        raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    digest = hash_token(token)

    def load() -> Principal:
        row = session.scalar(select(Token).where(Token.token_hash == digest))
        if row is None:
            raise AuthError(401, "unknown or revoked token")
        return Principal(row.id, row.role, row.team_id, row.name)

    principal = cache.get_or_load(digest, load) if cache is not None else load()
    # Prepared statements on the session's connection: SQLAlchemy's execute path cost more than
    # the lookup itself, twice per lease + report round trip.
    conn = prepared.connection(session)
    state = prepared.first(conn, _token_state(), {"b_id": principal.token_id})
    if state is None or state.revoked:
        raise AuthError(401, "unknown or revoked token")
    now = utcnow()
    if state.last_used_at is None or now - state.last_used_at.replace(tzinfo=UTC) > _TOUCH_EVERY:
        prepared.execute(conn, _touch_token(), {"b_id": principal.token_id, "b_now": now})
        if commit_touch:
            session.commit()
    return principal


def require_role(principal: Principal, *roles: str) -> Principal:
    """Admin passes every check; otherwise the principal's role must be listed."""
    if principal.role == "admin" or principal.role in roles:
        return principal
    raise AuthError(403, f"a {principal.role} token may not do this; needs role {' or '.join(roles)}")


def check_priority(principal: Principal, priority: int, team_limit: int) -> None:
    """Teams may ask for priorities up to ``team_limit``; only the admin goes higher (to 1000)."""
    if priority > team_limit and principal.role != "admin":
        raise AuthError(
            403, f"priority {priority} is above {team_limit}, the most a team token may ask for; "
            "lower it or ask the lab admin"
        )


def token_item(token: Token, team_name: str | None) -> TokenView:
    """A token as listed (never its secret nor its hash)."""
    return TokenView(
        id=token.id, team=team_name, role=token.role, name=token.name,
        created_at=token.created_at, last_used_at=token.last_used_at, revoked_at=token.revoked_at,
    )  # fmt: skip


def list_tokens(session: Session, principal: Principal) -> list[TokenView]:
    """Every token for the admin; a team token sees its own team's tokens."""
    require_role(principal, "team")
    query = select(Token, Team.name).outerjoin(Team, Team.id == Token.team_id).order_by(Token.id)
    if principal.role != "admin":
        query = query.where(Token.team_id == principal.team_id)
    return [token_item(token, team) for token, team in session.execute(query)]


def revoke_token(session: Session, principal: Principal, token_id: int) -> TokenView:
    """Revoke a token (admin: any; team: its team's). Revoking twice keeps the first time."""
    require_role(principal, "team")
    token = session.get(Token, token_id, with_for_update=True)
    if token is None or (principal.role != "admin" and token.team_id != principal.team_id):
        raise NotFound(f"token {token_id} does not exist or belongs to another team")
    if not token.revoked and token.role == "admin" and _active_admins(session) <= 1:
        raise Conflict("this is the last active admin token: create another admin token before revoking it")
    if not token.revoked:
        token.revoked, token.revoked_at = True, utcnow()
    team = session.get(Team, token.team_id) if token.team_id is not None else None
    return token_item(token, team.name if team else None)


def _active_admins(session: Session) -> int:
    return len(list(session.scalars(select(Token.id).where(Token.role == "admin", Token.revoked.is_(False)))))


def create_team(session: Session, name: str) -> tuple[Team, str]:
    if session.scalar(select(Team).where(Team.name == name)) is not None:
        raise Conflict(f"team {name!r} already exists")
    team = Team(name=name)
    session.add(team)
    session.flush()
    return team, issue_token(session, "team", name=f"team:{name}"[:200], team_id=team.id)


def admin_team(session: Session) -> Team:
    """The team that owns work submitted with the admin token (created on demand)."""
    team = session.scalar(select(Team).where(Team.name == "admin"))
    if team is None:
        team = Team(name="admin")
        session.add(team)
        session.flush()
    return team


def ensure_admin_token(session: Session, configured: str | None, data_dir: Path) -> str | None:
    """Register the configured admin token, or generate one at first start.

    Returns a newly generated token (to print once) or None. A generated token is also written to
    ``<data_dir>/admin_token`` (mode 0600) so that local tools and the demo can read it.
    """
    if configured:
        ensure_preshared_token(session, configured, "admin", "admin (env)")
        return None
    if session.scalar(select(Token).where(Token.role == "admin", Token.revoked.is_(False))) is not None:
        return None
    token = issue_token(session, "admin", name="admin (generated)")
    write_secret(data_dir / "admin_token", token)
    return token


def ensure_preshared_token(session: Session, token: str, role: str, name: str) -> None:
    """Register a token handed over by the environment (e.g. the agent token of docker-compose)."""
    digest = hash_token(token)
    if session.scalar(select(Token).where(Token.token_hash == digest)) is None:
        session.add(Token(token_hash=digest, role=role, name=name))


def write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.chmod(path, 0o600)
