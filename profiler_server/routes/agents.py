"""Agent registration, heartbeats, and the device list."""

from __future__ import annotations

from fastapi import APIRouter, Path

from profiler_server import devices, farm_status, jobs
from profiler_server.deps import AgentDep, PrincipalDep, SessionDep, SettingsDep
from profiler_server.openapi import ANY_TOKEN, AUTH, BODY, INVALID, MISSING, error_responses
from shared.api import AgentRegister, AgentRegistered, DeviceView, Heartbeat, Ok

router = APIRouter(prefix="/v1", tags=["agents"])
AgentId = Path(max_length=64, pattern=r"^[0-9a-f]{1,64}$")
Serial = Path(min_length=1, max_length=128)


@router.post("/agents", response_model=AgentRegistered, status_code=201, responses=AUTH | BODY)
def register_agent(
    body: AgentRegister, session: SessionDep, settings: SettingsDep, principal: AgentDep
) -> AgentRegistered:
    agent = devices.register_agent(session, principal, body)
    session.commit()
    return AgentRegistered(agent_id=agent.id, heartbeat_s=settings.heartbeat_s)


@router.post("/agents/{agent_id}/heartbeat", response_model=Ok, responses=AUTH | BODY | error_responses(404, 409))
def heartbeat(
    body: Heartbeat, session: SessionDep, settings: SettingsDep, principal: AgentDep, agent_id: str = AgentId
) -> Ok:
    devices.heartbeat(session, principal, agent_id, body.serials)
    jobs.extend_leases(session, agent_id, body.serials, settings.lease_s)
    session.commit()
    return Ok()


@router.get("/devices", response_model=list[DeviceView], responses=ANY_TOKEN)
def list_devices(session: SessionDep, principal: PrincipalDep) -> list[DeviceView]:
    """Every device with its last temperature, current job and measurements today."""
    return farm_status.device_views(session, principal)


@router.get("/devices/{serial}", response_model=DeviceView, responses=ANY_TOKEN | MISSING | INVALID)
def get_device(session: SessionDep, principal: PrincipalDep, serial: str = Serial) -> DeviceView:
    return farm_status.device_views(session, principal, serial)[0]
