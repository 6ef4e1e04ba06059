"""Campaigns: create (sample, export, queue) and follow progress."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from profiler_server import campaigns
from profiler_server.auth import authenticate, require_role
from profiler_server.db import Campaign
from profiler_server.deps import Credentials, PrincipalDep, SessionDep

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Path(ge=1, le=2**62)


# Async, with the database work in worker threads: waiting for the export (``wait_s``) holds no
# worker thread and no database connection, so many waiting clients cannot starve other requests.
@router.post("", status_code=201)
async def create_campaign(body: campaigns.CampaignCreate, request: Request, creds: Credentials) -> dict:
    app = request.app
    campaign_id = await run_in_threadpool(_create, app, creds, body)
    future = app.state.exporter.submit(campaign_id)
    # small campaigns answer with final counts; big ones are followed with GET (see "exported")
    with contextlib.suppress(TimeoutError):  # shield: a timeout must not cancel a queued export
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout=body.wait_s)
    return await run_in_threadpool(_view, app, campaign_id)


def _create(app: FastAPI, creds: HTTPAuthorizationCredentials | None, body: campaigns.CampaignCreate) -> int:
    with app.state.db.sessions() as session:
        token = creds.credentials if creds else None
        principal = require_role(authenticate(session, token, app.state.token_cache), "team")
        campaign = campaigns.create_campaign(session, principal, body, app.state.settings)
        session.commit()
        return campaign.id


def _view(app: FastAPI, campaign_id: int) -> dict:
    with app.state.db.sessions() as session:
        return campaigns.campaign_view(session, session.get(Campaign, campaign_id))


@router.get("/{campaign_id}")
def get_campaign(session: SessionDep, principal: PrincipalDep, campaign_id: int = CampaignId) -> dict:
    campaign = campaigns.get_campaign(session, principal, campaign_id)
    return campaigns.campaign_view(session, campaign)
