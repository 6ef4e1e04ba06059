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


def test_json_null_configs_from_older_revisions_become_sql_null(tmp_path):
    """Revision 0001 stored a network's missing config as the JSON text 'null', which passes an
    IS NOT NULL filter and broke every later predictor fit of that device class."""
    db = Database(f"sqlite:///{tmp_path}/nulls.db")
    upgrade_database(db.engine, "0001")
    now = "'2026-01-01 00:00:00'"
    with db.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO teams (id, name, created_at) VALUES (1, 't', {now})"))
        conn.execute(text(
            "INSERT INTO artifacts (sha256, format, size, kind, config, name, created_at) VALUES "
            f"('{'a' * 64}', 'onnx', 1, 'network', 'null', 'net', {now}), "
            f"('{'b' * 64}', 'onnx', 1, 'conv', '{{\"kind\": \"conv\"}}', '', {now})"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO jobs (id, team_id, artifact_sha256, kind, device_class, runtime, settings, state, "
            f"priority, attempts, max_attempts, name, created_at) VALUES (1, 1, '{'a' * 64}', 'network', 'd', "
            f"'r', '{{}}', 'done', 0, 1, 3, '', {now})"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO measurements (job_id, artifact_sha256, config, kind, device_class, runtime, serial, "
            "median_ms, mean_ms, p10_ms, p90_ms, std_ms, runs, warmup, samples, tool, tool_version, flags, "
            f"unstable, created_at) VALUES (1, '{'a' * 64}', 'null', 'network', 'd', 'r', 's', 1, 1, 1, 1, 0, "
            f"1, 0, '[]', '', '', '[]', 0, {now})"
        ))  # fmt: skip
    upgrade_database(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM measurements WHERE config IS NULL")).scalar() == 1
        configs = dict(conn.execute(text("SELECT kind, config FROM artifacts")).all())
    assert configs == {"network": None, "conv": '{"kind": "conv"}'}
