"""Persistence: ORM models, the engine/session factory and Alembic migrations."""

from profiler_server.db.engine import Database, make_engine
from profiler_server.db.migrate import upgrade_database
from profiler_server.db.models import (
    Agent,
    Artifact,
    ArtifactOwner,
    Base,
    Campaign,
    CampaignItem,
    Device,
    Job,
    Measurement,
    NetworkBlocks,
    PredictorVersion,
    Team,
    Token,
    utcnow,
)

__all__ = [
    "Agent",
    "Artifact",
    "ArtifactOwner",
    "Base",
    "Campaign",
    "CampaignItem",
    "Database",
    "Device",
    "Job",
    "Measurement",
    "NetworkBlocks",
    "PredictorVersion",
    "Team",
    "Token",
    "make_engine",
    "upgrade_database",
    "utcnow",
]
