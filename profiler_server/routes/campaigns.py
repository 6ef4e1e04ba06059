"""Campaigns: create (sample, export, queue) and follow progress."""

from __future__ import annotations

import concurrent.futures

from fastapi import APIRouter, Path, Request

from profiler_server import campaigns
from profiler_server.db import Campaign
from profiler_server.deps import PrincipalDep, SessionDep, SettingsDep, TeamDep
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Path(ge=1, le=2**62)


@router.post("", status_code=201, responses=AUTH | BODY | error_responses(400, 409))
def create_campaign(
    body: campaigns.CampaignCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: TeamDep,
) -> dict:
    campaign = campaigns.create_campaign(session, principal, body, settings)
    session.commit()
    future = request.app.state.exporter.submit(campaign.id)
    try:  # small campaigns answer with final counts; big ones are followed with GET
        future.result(timeout=body.wait_s)
    except concurrent.futures.TimeoutError:
        pass
    session.expire_all()
    return campaigns.campaign_view(session, session.get(Campaign, campaign.id))


@router.get("/{campaign_id}", responses=ANY_TOKEN | MISSING | INVALID)
def get_campaign(session: SessionDep, principal: PrincipalDep, campaign_id: int = CampaignId) -> dict:
    campaign = campaigns.get_campaign(session, principal, campaign_id)
    return campaigns.campaign_view(session, campaign)
