"""Campaigns: create (sample, export, queue) and follow progress."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from profiler_server import campaigns, listings
from profiler_server.auth import authenticate, check_priority, require_role
from profiler_server.cancel import cancel_campaign
from profiler_server.db import Campaign, Team
from profiler_server.deps import Credentials, PrincipalDep, SessionDep, TeamDep
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses
from shared.api import CampaignCreate, CampaignFilter, CampaignView, Page

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Path(ge=1, le=2**62)


# Async, with the database work in worker threads: waiting for the export (``wait_s``) holds no
# worker thread and no database connection, so many waiting clients cannot starve other requests.
@router.post("", response_model=CampaignView, status_code=201, responses=AUTH | BODY | error_responses(400, 409, 429))
async def create_campaign(body: CampaignCreate, request: Request, creds: Credentials) -> CampaignView:
    app = request.app
    campaign_id = await run_in_threadpool(_create, app, creds, body)
    future = app.state.exporter.submit(campaign_id)
    # small campaigns answer with final counts; big ones are followed with GET (see "exported")
    with contextlib.suppress(TimeoutError):  # shield: a timeout must not cancel a queued export
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout=body.wait_s)
    return await run_in_threadpool(_view_by_id, app, campaign_id)


def _create(app: FastAPI, creds: HTTPAuthorizationCredentials | None, body: CampaignCreate) -> int:
    with app.state.db.sessionmaker() as session:
        token = creds.credentials if creds else None
        principal = require_role(authenticate(session, token, app.state.token_cache), "team")
        check_priority(principal, body.priority, app.state.settings.max_team_priority)
        campaign = campaigns.create_campaign(session, principal, body, app.state.settings)
        session.commit()
        return campaign.id


def _view_by_id(app: FastAPI, campaign_id: int) -> CampaignView:
    with app.state.db.sessionmaker() as session:
        return _view(session, session.get(Campaign, campaign_id))


@router.get("", response_model=Page[CampaignView], responses=AUTH | INVALID)
def list_campaigns(
    session: SessionDep, principal: PrincipalDep, f: Annotated[CampaignFilter, Query()]
) -> Page[CampaignView]:
    """Campaigns, newest first: a team token sees its own, the admin all (``team`` filters)."""
    return listings.list_campaigns(session, principal, f)


@router.get("/{campaign_id}", response_model=CampaignView, responses=ANY_TOKEN | MISSING | INVALID)
def get_campaign(session: SessionDep, principal: PrincipalDep, campaign_id: int = CampaignId) -> CampaignView:
    return _view(session, campaigns.get_campaign(session, principal, campaign_id))


@router.post("/{campaign_id}/cancel", response_model=CampaignView,
             responses=AUTH | MISSING | INVALID | error_responses(409))
def cancel(session: SessionDep, principal: TeamDep, campaign_id: int = CampaignId) -> CampaignView:
    """Queued jobs leave the queue; running ones finish and their results are kept."""
    campaign = cancel_campaign(session, principal, campaign_id)
    session.commit()
    return _view(session, campaign)


def _view(session: SessionDep, campaign: Campaign) -> CampaignView:
    return campaigns.campaign_view(session, campaign, session.get(Team, campaign.team_id).name)
