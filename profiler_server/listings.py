"""Paged, filtered listings of campaigns and jobs. Each item is the view its single-item endpoint
answers (``GET /v1/campaigns/{id}``, ``GET /v1/jobs/{id}``); a team token sees its own team's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from profiler_server.auth import AuthError, Principal, require_role
from profiler_server.campaigns import campaign_view
from profiler_server.db import Campaign, Job, Measurement, Team
from profiler_server.jobs import measurement_summary
from shared.api import CampaignFilter, CampaignView, JobFilter, JobSettings, JobView, Page, Paging


def _page(session: Session, query: Select, f: Paging, order_by: Any) -> tuple[list, int]:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = list(session.execute(query.order_by(order_by).limit(f.limit).offset(f.offset)))
    return rows, total


def _own_team_only(principal: Principal, query: Select, team_column: Any) -> Select:
    require_role(principal, "team")
    return query if principal.role == "admin" else query.where(team_column == principal.team_id)


def list_campaigns(session: Session, principal: Principal, f: CampaignFilter) -> Page[CampaignView]:
    """Newest first."""
    query = _own_team_only(principal, select(Campaign, Team.name).join(Team), Campaign.team_id)
    if f.team is not None:
        if principal.role != "admin":
            raise AuthError(403, "only the admin may filter by team; a team token lists its own campaigns")
        query = query.where(Team.name == f.team)
    if f.state is not None:
        query = query.where(Campaign.state == f.state)
    if f.device_class is not None:
        query = query.where(Campaign.device_class == f.device_class)
    rows, total = _page(session, query, f, Campaign.id.desc())
    items = [campaign_view(session, campaign, team) for campaign, team in rows]
    return Page[CampaignView](items=items, total=total, limit=f.limit, offset=f.offset)


def list_jobs(session: Session, principal: Principal, f: JobFilter) -> Page[JobView]:
    """Newest first."""
    query = _own_team_only(principal, select(Job), Job.team_id)
    for column, value in (
        (Job.campaign_id, f.campaign_id), (Job.state, f.state), (Job.device_class, f.device_class),
        (Job.kind, f.kind),
    ):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    rows, total = _page(session, query, f, Job.id.desc())
    return Page[JobView](items=job_views(session, [r[0] for r in rows]), total=total, limit=f.limit,
                         offset=f.offset)  # fmt: skip


def job_views(session: Session, jobs: list[Job]) -> list[JobView]:
    """The views of ``jobs`` with their measurements and team names (three queries in all)."""
    ids = [j.id for j in jobs]
    measured = {m.job_id: m for m in session.scalars(select(Measurement).where(Measurement.job_id.in_(ids)))}
    teams = dict(session.execute(select(Team.id, Team.name).where(Team.id.in_({j.team_id for j in jobs}))).all())
    return [job_item(job, measured.get(job.id), teams.get(job.team_id)) for job in jobs]


def job_item(job: Job, meas: Measurement | None, team: str | None) -> JobView:
    """The job as every job route answers it, with its measurement in brief."""
    return JobView(
        id=job.id, state=job.state, campaign_id=job.campaign_id, team=team,
        device_class=job.device_class, runtime=job.runtime, artifact_sha256=job.artifact_sha256,
        kind=job.kind, name=job.name, priority=job.priority, attempts=job.attempts,
        error=job.error, leased_by_device=job.leased_by_device, created_at=job.created_at,
        finished_at=job.finished_at, predicted_ms=JobSettings.model_validate(job.settings or {}).predicted_ms,
        measurement=None if meas is None else measurement_summary(meas),
    )  # fmt: skip
