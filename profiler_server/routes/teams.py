"""Teams and tokens: creating them is the admin's; a team token lists and revokes its team's."""

from __future__ import annotations

from fastapi import APIRouter, Path

from profiler_server import auth
from profiler_server.deps import AdminDep, SessionDep, TeamDep
from profiler_server.errors import NotFound
from profiler_server.openapi import AUTH, BODY, error_responses
from shared.api import TeamCreate, TeamCreated, TokenCreate, TokenCreated, TokenList, TokenView

router = APIRouter(prefix="/v1", tags=["teams"])


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


@router.get("/tokens", response_model=TokenList, responses=AUTH)
def list_tokens(session: SessionDep, principal: TeamDep) -> TokenList:
    """Tokens without their secrets: the admin sees all, a team token its team's."""
    return TokenList(items=auth.list_tokens(session, principal))


@router.delete("/tokens/{token_id}", response_model=TokenView, responses=AUTH | error_responses(404, 409, 422))
def revoke_token(session: SessionDep, principal: TeamDep, token_id: int = Path(ge=1, le=2**62)) -> TokenView:
    """Refused (401) from the next request on, on every server process of this database."""
    item = auth.revoke_token(session, principal, token_id)
    session.commit()
    return item
