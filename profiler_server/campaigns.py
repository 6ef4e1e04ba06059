"""Measurement campaigns: sample configs, export artifacts, queue the jobs nobody has measured yet.

Creating a campaign stores its configs and hands the export to a worker thread (exports take tens
of ms per block). The worker queues jobs as it goes, so agents start before the export finishes;
``exported`` in the campaign view shows its progress. At shutdown the export stops after the config
in hand, and the next start resumes it (``resume_exports``): configs already queued are skipped. One job is queued per
(artifact, device class, runtime key) without a measurement or live job; the rest are ``cached``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profiler_server import jobs
from profiler_server.artifacts import export_block_artifact
from profiler_server.auth import Principal, admin_team
from profiler_server.db import Artifact, Campaign, CampaignItem, Database, Job, Measurement, utcnow
from profiler_server.errors import BadRequest, NotFound, TooManyRequests
from profiler_server.export_worker import start_worker
from profiler_server.predictor.adaptive import adaptive_configs
from profiler_server.settings import Settings
from shared.api import CampaignCreate, CampaignView, JobSettings
from shared.config import AnyBlock
from shared.costs import block_macs, block_params
from shared.export import tflite_available
from shared.kernel_space import sample_kernels
from shared.kernels import KernelConfig, kernel_costs, parse_campaign_configs
from shared.schemas import RuntimeSettings
from shared.space import SAMPLERS, default_space

log = logging.getLogger(__name__)
BATCH = 25  # configs per transaction while queueing


def choose_configs(session: Session, body: CampaignCreate, runtime: str) -> tuple[list[AnyBlock], str]:
    if body.configs is not None:
        return list(body.configs), "explicit"
    if body.family == "kernels":
        if body.space is not None or body.sampling == "adaptive":
            raise BadRequest("a kernel campaign samples its own kernel space: give n and seed, not space or adaptive")
        reorders = runtime.startswith("onnxruntime") and body.device_class.startswith("host/")
        return sample_kernels(body.n, body.seed, reorders=reorders), "kernels"
    space = body.space or default_space()
    if body.sampling == "adaptive":
        return adaptive_configs(session, body.device_class, runtime, space, body.n, body.seed), "adaptive"
    return SAMPLERS[body.sampling](space, body.n, body.seed), body.sampling


def check_limits(configs: list[AnyBlock], limits: Settings) -> None:
    """400 for configs too big to export safely (export traces the block on real tensors)."""
    if len(configs) > limits.max_campaign_configs:
        raise BadRequest(
            f"{len(configs)} configs exceed this server's limit of {limits.max_campaign_configs}"
        )
    too_big = [
        c for c in configs
        if _macs(c) > limits.max_block_gmacs * 1e9 or _params(c) > limits.max_block_mparams * 1e6
    ]  # fmt: skip
    if too_big:
        raise BadRequest(
            f"{len(too_big)} configs exceed {limits.max_block_gmacs} GMACs or {limits.max_block_mparams} M params, "
            f"e.g. {too_big[0].model_dump()}"
        )


def team_live_jobs(session: Session, team_id: int) -> int:
    """Jobs of the team that are queued or running, plus every config of its campaigns still
    exporting (their jobs are about to be queued)."""
    live = session.scalar(select(func.count()).where(Job.team_id == team_id, Job.state.in_(jobs.LIVE)))
    exporting = session.scalar(
        select(func.coalesce(func.sum(Campaign.n), 0)).where(
            Campaign.team_id == team_id, Campaign.state == "exporting"
        )
    )
    return live + exporting


def check_team_queue(session: Session, principal: Principal, adding: int, limits: Settings) -> None:
    """429 when ``adding`` more jobs would take a team past ``team_max_queued_jobs`` (admin: no limit)."""
    if principal.role == "admin" or principal.team_id is None:
        return
    live = team_live_jobs(session, principal.team_id)
    if live + adding > limits.team_max_queued_jobs:
        raise TooManyRequests(
            f"your team has {live} jobs queued or running; {adding} more would pass the limit of "
            f"{limits.team_max_queued_jobs} per team (RTSEG_TEAM_MAX_QUEUED_JOBS): wait for them to finish"
        )


def _macs(cfg: AnyBlock | KernelConfig) -> float:
    return kernel_costs(cfg)[0] if isinstance(cfg, KernelConfig) else block_macs(cfg)


def _params(cfg: AnyBlock | KernelConfig) -> float:
    return kernel_costs(cfg)[3] if isinstance(cfg, KernelConfig) else block_params(cfg)


def create_campaign(
    session: Session, principal: Principal, body: CampaignCreate, limits: Settings
) -> Campaign:
    """Insert the campaign (state ``exporting``) with its configs; the caller starts the export."""
    runtime = body.runtime_settings()
    if runtime.runtime == "tflite" and not tflite_available():
        raise BadRequest("runtime tflite needs the optional 'tflite' extra on the server (see README)")
    if body.configs is None and body.n > limits.max_campaign_configs:
        raise BadRequest(f"n={body.n} exceeds this server's limit of {limits.max_campaign_configs} configs")
    configs, sampling = choose_configs(session, body, runtime.key())
    if runtime.runtime != "onnxruntime" and any(isinstance(c, KernelConfig) for c in configs):
        raise BadRequest("kernel configs are measured as one-kernel ONNX models: use an onnxruntime runtime")
    check_limits(configs, limits)
    check_team_queue(session, principal, len(configs), limits)
    team_id = principal.team_id if principal.team_id is not None else admin_team(session).id
    settings = body.job_settings().stored()
    settings.update(
        configs=[c.model_dump(mode="json") for c in configs],
        remeasure=body.remeasure,
        refresh=body.refresh,
        max_attempts=body.max_attempts,
    )
    campaign = Campaign(
        team_id=team_id,
        device_class=body.device_class,
        runtime=runtime.key(),
        settings=settings,
        priority=body.priority,
        seed=body.seed,
        n=len(configs),
        sampling=sampling,
        state="exporting",
    )
    session.add(campaign)
    session.flush()
    return campaign


class Exporter:
    """Runs campaign exports in worker threads (never on the event loop); each thread hands the
    export itself to the export worker process (``export_worker``), started here so that its
    imports are done before the first campaign."""

    def __init__(self, db: Database, artifacts_root: Path, completion: CampaignCompletion, workers: int = 1) -> None:
        self.db = db
        self.root = artifacts_root
        self.completion = completion
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export")
        self.stop = threading.Event()
        start_worker()

    def submit(self, campaign_id: int) -> Future:
        return self.pool.submit(self._run, campaign_id)

    def shutdown(self) -> None:
        """Stop every export after the config in hand (the campaign stays ``exporting`` and the
        next start resumes it); waits for that one config, not for the whole campaign."""
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, campaign_id: int) -> None:
        try:
            export_campaign(self.db, self.root, campaign_id, self.completion, self.stop.is_set)
        except Exception as exc:  # recorded on the campaign, where its owner will look
            log.exception("export of campaign %d failed", campaign_id)
            with self.db.transaction() as session:
                campaign = session.get(Campaign, campaign_id)
                campaign.state, campaign.error = "failed", f"export failed: {type(exc).__name__}: {exc}"


def export_campaign(
    db: Database, root: Path, campaign_id: int, completion: CampaignCompletion,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Export every config of the campaign and queue its jobs; idempotent (safe to resume). When
    ``stopping()`` turns true, queue what is exported and return with the campaign ``exporting``."""
    with db.sessionmaker() as session:
        campaign = session.get(Campaign, campaign_id)
        settings = dict(campaign.settings)
        done = set(
            session.scalars(
                select(CampaignItem.artifact_sha256).where(CampaignItem.campaign_id == campaign_id)
            )
        )
    runtime = RuntimeSettings(**settings["runtime"])
    fmt = "tflite" if runtime.runtime == "tflite" else "onnx"
    configs = parse_campaign_configs(settings["configs"])
    rng = random.Random(campaign.seed or 0)
    batch: list[Artifact] = []
    for cfg in configs:
        if stopping():
            _queue_batch(db, campaign_id, batch, done, rng)
            log.info("export of campaign %d stopped at shutdown; the next start resumes it", campaign_id)
            return
        batch.append(export_block_artifact(db, root, cfg, fmt))
        if len(batch) >= BATCH:
            if not _queue_batch(db, campaign_id, batch, done, rng):
                return  # cancelled while exporting: nothing more to export or queue
            batch = []
    if _queue_batch(db, campaign_id, batch, done, rng):
        _finish_export(db, campaign_id, completion)


def _queue_batch(
    db: Database, campaign_id: int, artifacts: list[Artifact], done: set[str], rng: random.Random
) -> bool:
    """Queue the jobs of one batch; False (and nothing queued) once the campaign was cancelled."""
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True)
        if campaign.state == "cancelled":
            return False
        s = campaign.settings
        job_settings = JobSettings.model_validate(s)
        for artifact in artifacts:
            if artifact.sha256 in done:
                continue
            done.add(artifact.sha256)
            session.add(CampaignItem(campaign_id=campaign_id, artifact_sha256=artifact.sha256))
            measured = jobs.live_or_measured(session, artifact.sha256, campaign.device_class, campaign.runtime)
            if measured and not s.get("refresh", False):
                campaign.cached += 1
                continue
            copies = 2 if rng.random() < s.get("remeasure", 0.0) else 1
            for _ in range(copies):
                session.add(
                    jobs.new_job(
                        artifact,
                        campaign.team_id,
                        campaign.device_class,
                        job_settings,
                        campaign_id=campaign_id,
                        priority=campaign.priority,
                        max_attempts=s.get("max_attempts", 3),
                    )
                )
    return True


def _finish_export(db: Database, campaign_id: int, completion: CampaignCompletion) -> None:
    """Export done: the campaign runs until no job it waits for is live (maybe none already)."""
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True)
        if campaign.state == "cancelled":
            return
        own_jobs = session.scalar(select(func.count()).where(Job.campaign_id == campaign_id))
        campaign.state = "running"
        if jobs.campaign_live_jobs(session, campaign) == 0:
            campaign.state, campaign.completed_at = "done", utcnow()
        completed = campaign.state == "done" and own_jobs > 0  # nothing new measured: nothing to refit
        key = (campaign.id, campaign.device_class, campaign.runtime)
    if completed:
        completion.fire(*key)


def resume_exports(db: Database, exporter: Exporter) -> list[int]:
    """Restart the exports of campaigns left in ``exporting`` by a stopped server."""
    with db.sessionmaker() as session:
        ids = list(session.scalars(select(Campaign.id).where(Campaign.state == "exporting")))
    for campaign_id in ids:
        log.info("resuming export of campaign %d", campaign_id)
        exporter.submit(campaign_id)
    return ids


CampaignCompleteHook = Callable[[int, str, str], object]  # (campaign id, device class, runtime)


class CampaignCompletion:
    """Tells the hook the app wires in (the predictor's refit) that a campaign completed, each call
    in a thread of its own: a slow or failing fit never holds a request, a lease or an export."""

    def __init__(self, hook: CampaignCompleteHook) -> None:
        self.hook = hook

    def fire(self, campaign_id: int, device_class: str, runtime: str) -> None:
        def call() -> None:
            try:
                self.hook(campaign_id, device_class, runtime)
            except Exception:  # a failing fit must not take the server down
                log.exception("campaign %d complete: the completion hook failed", campaign_id)

        threading.Thread(target=call, name=f"campaign-{campaign_id}-complete", daemon=True).start()

    def fire_pending(self, session: Session) -> None:
        """Fire for the campaigns completed by the transaction just committed on ``session``."""
        for key in session.info.pop("completed_campaigns", []):
            self.fire(*key)


def get_campaign(session: Session, principal: Principal, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or (principal.role != "admin" and campaign.team_id != principal.team_id):
        raise NotFound(f"campaign {campaign_id} does not exist or belongs to another team")
    return campaign


def _eta_s(session: Session, campaign_id: int, remaining: int) -> float | None:
    """Remaining jobs times the campaign's recent pace (time between its first and last result)."""
    first, last, count = session.execute(
        select(func.min(Measurement.created_at), func.max(Measurement.created_at), func.count())
        .join(Job, Job.id == Measurement.job_id)
        .where(Job.campaign_id == campaign_id)
    ).one()
    if remaining == 0:
        return 0.0
    if count < 2 or first is None:
        return None
    first, last = _aware(first), _aware(last)
    return remaining * (last - first).total_seconds() / (count - 1)


def _aware(value: datetime | str) -> datetime:
    # func.min() bypasses the column type on SQLite and returns text
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


def campaign_view(session: Session, campaign: Campaign, team: str | None) -> CampaignView:
    """The campaign as every campaign route answers it (``team``: its team's name)."""
    counts = dict(
        session.execute(
            select(Job.state, func.count()).where(Job.campaign_id == campaign.id).group_by(Job.state)
        ).all()
    )
    counts = {state: counts.get(state, 0) for state in ("queued", "running", "done", "failed", "cancelled")}
    remaining = counts["queued"] + counts["running"]
    exported = campaign.n
    if campaign.state == "exporting":  # distinct configs exported and queued so far
        exported = session.scalar(select(func.count()).where(CampaignItem.campaign_id == campaign.id))
    return CampaignView(
        id=campaign.id,
        state=campaign.state,
        device_class=campaign.device_class,
        runtime=campaign.runtime,
        team=team,
        n=campaign.n,
        exported=exported,
        sampling=campaign.sampling,
        priority=campaign.priority,
        jobs=sum(counts.values()),
        cached=campaign.cached,
        **counts,
        eta_s=_eta_s(session, campaign.id, remaining) if campaign.state != "exporting" else None,
        error=campaign.error,
        created_at=campaign.created_at,
        completed_at=campaign.completed_at,
    )
