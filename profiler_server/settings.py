"""Server settings: one pydantic-settings object, read from ``RTSEG_*`` environment variables.

The CLI overrides individual fields (``--db``, ``--data``); tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSEG_", extra="ignore")

    data_dir: Path = Field(Path("var/profiler"), description="artifacts, admin_token file, default DB")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/profiler.db")
    admin_token: str | None = Field(None, description="admin bearer token; generated at first start if unset")
    agent_token: str | None = Field(None, description="pre-shared agent token (docker-compose); optional")
    lease_s: float = Field(300.0, gt=0, description="a leased job returns to the queue after this long")
    max_attempts: int = Field(3, ge=1, le=100, description="leases (or failures) before a job fails")
    heartbeat_s: float = Field(10.0, gt=0, description="agents send a heartbeat this often")
    offline_after_s: float = Field(45.0, gt=0, description="a device is offline after this long unseen")
    reaper_interval_s: float = Field(5.0, gt=0, description="how often expired leases are requeued")
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0, description="largest network upload accepted")
    max_json_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest JSON request body accepted")
    max_campaign_configs: int = Field(50_000, ge=1, description="most configs one campaign may ask for")
    max_block_gmacs: float = Field(
        100.0, gt=0, description="refuse configs costlier than this (export runs them)"
    )
    max_block_mparams: float = Field(200.0, gt=0, description="refuse configs with more weights than this")
    max_team_priority: int = Field(
        100, ge=0, le=1000, description="highest job priority a team token may ask for (admin: up to 1000)"
    )
    export_workers: int = Field(1, ge=1, le=32, description="threads exporting campaign artifacts")
    agent_process: bool = Field(
        True, description="run the agents' lease and result transactions in a process of their own "
        "(a second core); false: in a thread of the server process"
    )
    host_agent_grace_s: float = Field(
        20.0, ge=0, description="--host-device: at shutdown, time the agent gets to finish its job in hand"
    )
    host_agent_max_outage_s: float = Field(
        60.0, gt=0, description="--host-device: the agent stops after this long without an answer from the server"
    )
    team_max_queued_jobs: int = Field(
        100_000, ge=1, description="most queued or running jobs one team may have (campaigns still exporting count in full)"
    )
    team_max_running_fits: int = Field(2, ge=1, description="most predictor fits one team may have queued or fitting")

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir}/profiler.db"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
