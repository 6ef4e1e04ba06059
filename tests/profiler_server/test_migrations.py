"""Migrations: a fresh and an existing database both reach head; the models match the migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from farm_helpers import ADMIN, bearer, make_settings, small_configs
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from profiler_server.app import create_app
from profiler_server.db import Base, Database, upgrade_database
from profiler_server.db.migrate import alembic_config


def _head(db: Database) -> str:
    return ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()


def test_fresh_database_upgrades_to_head_and_matches_the_models(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/fresh.db")
    upgrade_database(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head(db)
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"
    assert {"jobs", "measurements", "predictor_versions", "campaign_items"} <= set(
        inspect(db.engine).get_table_names()
    )


def test_existing_database_keeps_its_data_across_restarts(tmp_path):
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        team = c.post("/v1/teams", json={"name": "keep"}, headers=bearer(ADMIN)).json()["token"]
        c.post(
            "/v1/campaigns",
            json={"device_class": "host/x", "configs": small_configs(2)},
            headers=bearer(team),
        )
    with TestClient(create_app(settings)) as c:  # second start: upgrade is a no-op, data intact
        view = c.get("/v1/campaigns/1", headers=bearer(team)).json()
        assert view["jobs"] == 2
    db = Database(settings.database_url)
    upgrade_database(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 2


def test_database_from_an_older_revision_upgrades(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/old.db")
    upgrade_database(db.engine, "0001")
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO teams (name, created_at) VALUES ('old', '2026-01-01 00:00:00')"))
    upgrade_database(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM teams")).scalar() == "old"
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head(db)
