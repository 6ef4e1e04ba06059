"""Campaigns: create (sample, export, queue) and follow progress."""

from __future__ import annotations

import concurrent.futures
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from profiler_server import campaigns, listings
from profiler_server.auth import check_priority
from profiler_server.cancel import cancel_campaign
from profiler_server.db import Campaign, Team
from profiler_server.deps import PrincipalDep, SessionDep, SettingsDep, TeamDep

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Path(ge=1, le=2**62)


@router.post("", status_code=201)
def create_campaign(
    body: campaigns.CampaignCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: TeamDep,
) -> dict:
    check_priority(principal, body.priority, settings.max_team_priority)
    campaign = campaigns.create_campaign(session, principal, body, settings)
    session.commit()
    future = request.app.state.exporter.submit(campaign.id)
    try:  # small campaigns answer with final counts; big ones are followed with GET
        future.result(timeout=body.wait_s)
    except concurrent.futures.TimeoutError:
        pass
    session.expire_all()
    return _view(session, session.get(Campaign, campaign.id))


@router.get("")
def list_campaigns(
    session: SessionDep, principal: PrincipalDep, f: Annotated[listings.CampaignFilter, Query()]
) -> dict[str, Any]:
    """Campaigns, newest first: a team token sees its own, the admin all (``team`` filters)."""
    return listings.list_campaigns(session, principal, f)


@router.get("/{campaign_id}")
def get_campaign(session: SessionDep, principal: PrincipalDep, campaign_id: int = CampaignId) -> dict:
    return _view(session, campaigns.get_campaign(session, principal, campaign_id))


@router.post("/{campaign_id}/cancel")
def cancel(session: SessionDep, principal: TeamDep, campaign_id: int = CampaignId) -> dict:
    """Queued jobs leave the queue; running ones finish and their results are kept."""
    campaign = cancel_campaign(session, principal, campaign_id)
    session.commit()
    return _view(session, campaign)


def _view(session: SessionDep, campaign: Campaign) -> dict[str, Any]:
    return {**campaigns.campaign_view(session, campaign), "team": session.get(Team, campaign.team_id).name}
