"""Agents and their devices: registration, heartbeats, and the reaper that notices silence.

The reaper marks devices offline after ``offline_after_s`` without a heartbeat and requeues the
leases that ran out (``jobs.expire_leases``), whether or not the device is still around.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from profiler_server.auth import Principal
from profiler_server.cache import TTLCache
from profiler_server.db import Agent, Database, Device, utcnow
from profiler_server.errors import Conflict, NotFound
from profiler_server.settings import Settings
from shared.schemas import AgentRegister

if TYPE_CHECKING:  # campaigns imports the exporter (torch): the agent process needs none of it
    from profiler_server.campaigns import CampaignCompletion

log = logging.getLogger(__name__)


def register_agent(session: Session, principal: Principal, body: AgentRegister) -> Agent:
    """The agent's id (a new one, or the one it re-registers under when that was registered with
    the same token: its leases stay its own); its devices are (re)bound to it by serial."""
    agent = session.get(Agent, body.agent_id) if body.agent_id else None
    if agent is None or agent.token_id != principal.token_id:
        agent = Agent(id=uuid.uuid4().hex, name=body.name, token_id=principal.token_id)
        session.add(agent)
        session.flush()
    agent.name, agent.last_seen = body.name, utcnow()
    now = utcnow()
    for info in body.devices:
        device = session.scalar(select(Device).where(Device.serial == info.serial))
        if device is None:
            device = Device(serial=info.serial)
            session.add(device)
        device.agent_id = agent.id
        device.device_class = info.device_class
        device.info = info.model_dump(mode="json")
        device.last_seen = now
        device.online = True
    return agent


def owned_agent(session: Session, principal: Principal, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id!r} is not registered: POST /v1/agents first")
    if principal.role != "admin" and agent.token_id != principal.token_id:
        raise Conflict(f"agent {agent_id!r} was registered with another token")
    return agent


def heartbeat(session: Session, principal: Principal, agent_id: str, serials: list[str]) -> None:
    """Mark the agent and the listed devices seen now (serials of other agents are ignored)."""
    agent = owned_agent(session, principal, agent_id)
    now = utcnow()
    agent.last_seen = now
    if serials:
        session.execute(
            update(Device)
            .where(Device.agent_id == agent.id, Device.serial.in_(serials))
            .values(last_seen=now, online=True)
        )


def agent_device(
    session: Session, principal: Principal, agent_id: str, serial: str, cache: TTLCache | None = None
) -> str:
    """The device class of ``serial``, which this agent (registered with this token) must hold.

    Cached briefly: leasing is the hottest path, and registrations change rarely."""

    def load() -> str:
        agent = owned_agent(session, principal, agent_id)
        device = session.scalar(select(Device).where(Device.serial == serial))
        if device is None or device.agent_id != agent.id:
            raise NotFound(f"device {serial!r} is not registered by agent {agent_id!r}")
        return device.device_class

    key = (principal.token_id, agent_id, serial)
    return cache.get_or_load(key, load) if cache is not None else load()


def mark_offline(session: Session, offline_after_s: float) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=offline_after_s)
    serials = list(session.scalars(select(Device.serial).where(Device.online, Device.last_seen < cutoff)))
    if serials:
        session.execute(update(Device).where(Device.serial.in_(serials)).values(online=False))
        log.warning("devices offline after %.0f s without heartbeat: %s", offline_after_s, serials)
    return serials


def reap(db: Database, settings: Settings, completion: CampaignCompletion) -> None:
    """One reaper pass: offline devices give back their leases; expired leases return to the queue
    (a campaign whose last job thereby fails is complete: ``completion`` hears of it)."""
    from profiler_server.jobs import expire_leases, requeue_device_leases

    with db.sessionmaker() as session:
        with session.begin():
            offline = mark_offline(session, settings.offline_after_s)
            if offline:
                requeue_device_leases(session, offline)
            expire_leases(session)
        completion.fire_pending(session)


async def reaper_loop(db: Database, settings: Settings, completion: CampaignCompletion) -> None:
    while True:
        await asyncio.sleep(settings.reaper_interval_s)
        try:
            await asyncio.to_thread(reap, db, settings, completion)
        except Exception:  # the reaper must survive a locked or briefly unreachable database
            log.exception("reaper pass failed")
