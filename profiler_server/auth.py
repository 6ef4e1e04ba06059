"""Bearer tokens: random secrets shown once, stored as sha256 hashes, each with a role.

Roles: ``admin`` (everything), ``team`` (campaigns, networks, predictor fits of its team),
``agent`` (register devices, heartbeat, lease, report). Tokens are 32 random bytes, so a plain
sha256 is enough to make a leaked database useless for logging in (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from profiler_server.cache import TTLCache
from profiler_server.db import Team, Token
from profiler_server.errors import Conflict, ServerError

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


def authenticate(session: Session, token: str | None, cache: TTLCache | None = None) -> Principal:
    """The principal of a bearer token; ``cache`` saves the lookup on hot paths (lease, report)."""
    if not token:
        raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    digest = hash_token(token)

    def load() -> Principal:
        row = session.scalar(select(Token).where(Token.token_hash == digest))
        if row is None or row.revoked:
            raise AuthError(401, "unknown or revoked token")
        return Principal(row.id, row.role, row.team_id, row.name)

    return cache.get_or_load(digest, load) if cache is not None else load()


def require_role(principal: Principal, *roles: str) -> Principal:
    """Admin passes every check; otherwise the principal's role must be listed."""
    if principal.role == "admin" or principal.role in roles:
        return principal
    raise AuthError(403, f"a {principal.role} token may not do this; needs role {' or '.join(roles)}")


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
