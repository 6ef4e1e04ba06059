"""Teams and tokens: creating them is the admin's; a team token lists and revokes its team's."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from profiler_server import auth
from profiler_server.deps import AdminDep, SessionDep, TeamDep
from profiler_server.errors import NotFound
from profiler_server.openapi import AUTH, BODY, error_responses

router = APIRouter(prefix="/v1", tags=["teams"])


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")


class TeamCreated(BaseModel):
    id: int
    name: str
    token: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["agent", "team", "admin"] = "agent"
    name: str = Field("", max_length=200)
    team_id: int | None = Field(None, ge=1, le=2**53, description="required for role=team, only there")

    @model_validator(mode="after")
    def _team_id_with_team_role(self) -> TokenCreate:
        if (self.role == "team") != (self.team_id is not None):
            raise ValueError(f"team_id is required for role 'team' and applies to it only (role {self.role!r})")
        return self


class TokenCreated(BaseModel):
    role: str
    name: str
    token: str


@router.post("/teams", response_model=TeamCreated, status_code=201, responses=AUTH | BODY | error_responses(409))
def create_team(body: TeamCreate, session: SessionDep, _: AdminDep) -> TeamCreated:
    team, token = auth.create_team(session, body.name)
    session.commit()
    return TeamCreated(id=team.id, name=team.name, token=token)


@router.post("/tokens", response_model=TokenCreated, status_code=201, responses=AUTH | BODY | error_responses(404))
def create_token(body: TokenCreate, session: SessionDep, _: AdminDep) -> TokenCreated:
    if body.role == "team" and session.get(auth.Team, body.team_id) is None:
        raise NotFound(f"a team token needs an existing team_id (got {body.team_id})")
    token = auth.issue_token(session, body.role, name=body.name, team_id=body.team_id)
    session.commit()
    return TokenCreated(role=body.role, name=body.name, token=token)


@router.get("/tokens", responses=AUTH)
def list_tokens(session: SessionDep, principal: TeamDep) -> dict[str, Any]:
    """Tokens without their secrets: the admin sees all, a team token its team's."""
    return {"items": auth.list_tokens(session, principal)}


@router.delete("/tokens/{token_id}", responses=AUTH | error_responses(404, 409, 422))
def revoke_token(session: SessionDep, principal: TeamDep, token_id: int = Path(ge=1, le=2**62)) -> dict[str, Any]:
    """Refused (401) from the next request on, on every server process of this database."""
    item = auth.revoke_token(session, principal, token_id)
    session.commit()
    return item
