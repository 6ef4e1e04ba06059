"""Prepared hot-path statements on a real SQLite file store and read exactly what SQLAlchemy's own
execute path stores and reads (UTC datetimes, JSON, SQL NULL), inside the session's transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, text

from profiler_server.db import Artifact, Database, Job, Measurement, Team, prepared, upgrade_database


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path}/prepared.db")
    upgrade_database(database.engine)
    with database.transaction() as s:
        team = Team(name="t")
        s.add_all([team, Artifact(sha256="a" * 64, format="onnx", size=1, kind="conv", config=None)])
        s.flush()
        s.add_all(Job(team_id=team.id, artifact_sha256="a" * 64, kind="conv", device_class="c", runtime="r")
                  for _ in range(2))  # fmt: skip
    yield database
    database.dispose()


MEAS = Measurement.__table__
INSERT = (
    insert(MEAS)
    .values({c.key: bindparam(c.key, type_=c.type) for c in MEAS.c if c.key != "id"})
    .returning(MEAS.c.id, MEAS.c.created_at, MEAS.c.samples)
)
STORED = text(
    "SELECT created_at, samples, flags, config IS NULL, unstable FROM measurements WHERE job_id = :j"
)


def measurement(job_id: int, when: datetime) -> dict:
    return dict(
        job_id=job_id, artifact_sha256="a" * 64, config=None, kind="conv", device_class="c", runtime="r",
        serial="s", median_ms=1.5, mean_ms=1.6, p10_ms=1.2, p90_ms=1.9, std_ms=0.1, runs=3, warmup=1,
        samples=[1.25, 1.5, 2.0], temp_before_c=None, temp_after_c=31.5, tool="t", tool_version="1",
        flags=["--x"], unstable=True, created_at=when,
    )  # fmt: skip


@pytest.mark.parametrize("zone", [UTC, timezone(timedelta(hours=2))], ids=["utc", "utc+2"])
def test_a_prepared_insert_stores_what_sqlalchemy_stores_and_reads_back_the_same_types(db: Database, zone):
    when = datetime(2026, 11, 30, 7, 5, 1, 250_000, tzinfo=zone)
    with db.transaction() as s:
        conn = s.connection()
        row = prepared.first(conn, INSERT, measurement(1, when))  # raw sqlite3
        conn.execute(INSERT, measurement(2, when))  # SQLAlchemy's own path
        assert (row.created_at, row.samples) == (when, [1.25, 1.5, 2.0])
        # same bytes in the file: datetimes as SQLAlchemy formats them, JSON text, SQL NULL, booleans
        assert conn.execute(STORED, {"j": 1}).one() == conn.execute(STORED, {"j": 2}).one()
    with db.sessionmaker() as s:
        first, second = s.scalars(select(Measurement).order_by(Measurement.job_id)).all()
        assert first.created_at == second.created_at == when and first.config is None
        assert first.samples == second.samples and first.flags == ["--x"]


def test_prepared_statements_run_inside_the_sessions_transaction(db: Database):
    lookup = select(Job.id, Job.state, Job.created_at).where(Job.id == bindparam("b_id"))
    with db.sessionmaker() as s:
        conn = s.connection()
        prepared.execute(conn, text("UPDATE jobs SET state = 'running' WHERE id = :id"), {"id": 1})
        assert prepared.first(conn, lookup, {"b_id": 1}).state == "running"
        assert prepared.first(conn, lookup, {"b_id": 1}) == conn.execute(lookup, {"b_id": 1}).first()
        assert prepared.first(conn, lookup, {"b_id": 99}) is None
        s.rollback()
    with db.sessionmaker() as s:
        assert s.get(Job, 1).state == "queued"  # the rollback took the prepared write with it
