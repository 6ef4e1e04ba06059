"""Agent registration, heartbeats, and the device list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from sqlalchemy import select

from profiler_server import devices, jobs
from profiler_server.db import Device
from profiler_server.deps import AgentDep, PrincipalDep, SessionDep, SettingsDep
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, error_responses
from shared.schemas import AgentRegister, AgentRegistered, Heartbeat

router = APIRouter(prefix="/v1", tags=["agents"])
AgentId = Path(max_length=64, pattern=r"^[0-9a-f]{1,64}$")


@router.post("/agents", response_model=AgentRegistered, status_code=201, responses=AUTH | BODY)
def register_agent(
    body: AgentRegister, session: SessionDep, settings: SettingsDep, principal: AgentDep
) -> AgentRegistered:
    agent = devices.register_agent(session, principal, body)
    session.commit()
    return AgentRegistered(agent_id=agent.id, heartbeat_s=settings.heartbeat_s)


@router.post("/agents/{agent_id}/heartbeat", responses=AUTH | BODY | error_responses(404, 409))
def heartbeat(
    body: Heartbeat, session: SessionDep, settings: SettingsDep, principal: AgentDep, agent_id: str = AgentId
) -> dict:
    devices.heartbeat(session, principal, agent_id, body.serials)
    jobs.extend_leases(session, body.serials, settings.lease_s)
    session.commit()
    return {"ok": True}


@router.get("/devices", responses=ANY_TOKEN)
def list_devices(session: SessionDep, _: PrincipalDep) -> list[dict[str, Any]]:
    rows = session.scalars(select(Device).order_by(Device.device_class, Device.serial))
    keys = ("serial", "device_class", "agent_id", "online", "last_seen", "info")
    return [{k: getattr(d, k) for k in keys} for d in rows]
