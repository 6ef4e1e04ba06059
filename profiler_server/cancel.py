"""Cancelling a campaign or a single job: queued jobs leave the queue, running ones finish.

A queued job of a cancelled campaign that another live campaign also waits for (it took the config
from the cache) is handed over to that campaign instead of being cancelled, so cancelling one
team's campaign never leaves another team's campaign without its measurement.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from profiler_server.auth import Principal, require_role
from profiler_server.db import Campaign, CampaignItem, Job, utcnow
from profiler_server.errors import Conflict, NotFound

FINISHED = ("done", "failed", "cancelled")


def cancel_campaign(session: Session, principal: Principal, campaign_id: int) -> Campaign:
    """Owner team or admin; 404 unknown (or another team's), 409 already finished."""
    require_role(principal, "team")
    campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
    if campaign is None or (principal.role != "admin" and campaign.team_id != principal.team_id):
        raise NotFound(f"campaign {campaign_id} does not exist or belongs to another team")
    if campaign.state in FINISHED:
        raise Conflict(f"campaign {campaign_id} is already {campaign.state}; nothing to cancel")
    campaign.state, campaign.completed_at = "cancelled", utcnow()
    campaign.error = f"cancelled by {principal.role} token {principal.name or principal.token_id}"
    queued = session.scalars(
        select(Job).where(Job.campaign_id == campaign_id, Job.state == "queued").with_for_update()
    )
    for job in list(queued):
        heir = _other_campaign_waiting(session, campaign, job)
        if heir is None:
            _cancel_job(job, f"campaign {campaign_id} cancelled")
        else:
            job.campaign_id, job.team_id, job.priority = heir.id, heir.team_id, heir.priority
    return campaign


def _other_campaign_waiting(session: Session, campaign: Campaign, job: Job) -> Campaign | None:
    items = select(CampaignItem.campaign_id).where(CampaignItem.artifact_sha256 == job.artifact_sha256)
    return session.scalars(
        select(Campaign)
        .where(Campaign.id.in_(items), Campaign.id != campaign.id)
        .where(Campaign.state.in_(("exporting", "running")))
        .where(Campaign.device_class == job.device_class, Campaign.runtime == job.runtime)
        .order_by(Campaign.id)
        .limit(1)
    ).first()


def _cancel_job(job: Job, reason: str) -> None:
    job.state, job.error, job.finished_at = "cancelled", reason, utcnow()


def cancel_job(session: Session, principal: Principal, job_id: int) -> Job:
    """Cancel one queued job (e.g. a network upload waiting for a device class no agent serves)."""
    require_role(principal, "team")
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None or (principal.role != "admin" and job.team_id != principal.team_id):
        raise NotFound(f"job {job_id} does not exist or belongs to another team")
    if job.state != "queued":
        raise Conflict(f"job {job_id} is {job.state}; only a queued job can be cancelled (a running one finishes)")
    if job.campaign_id is not None:
        raise Conflict(f"job {job_id} belongs to campaign {job.campaign_id}: cancel the campaign instead")
    _cancel_job(job, f"cancelled by {principal.role} token {principal.name or principal.token_id}")
    return job
