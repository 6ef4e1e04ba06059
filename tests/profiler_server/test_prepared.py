"""Prepared hot-path statements on a real SQLite file store and read exactly what SQLAlchemy's own
execute path stores and reads (UTC datetimes, JSON, SQL NULL), inside the session's transaction.

JSON columns are written with msgspec (fast) and fall back to the standard json module for what
msgspec would change or refuse: nothing stored changes meaning, and rows written before
(``json.dumps`` text, NaN included) read back the same."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, text

from profiler_server.db import Artifact, Database, Job, Measurement, Team, prepared, upgrade_database
from profiler_server.db.engine import json_dumps, json_loads


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


CONFIG = {"c_in": 8, "k": [3, 3], "note": None}


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("write", ["prepared", "sqlalchemy"])
def test_nan_and_infinities_survive_a_json_column(db: Database, write: str):
    samples = [1.25, float("nan"), float("inf"), -float("inf"), 0.1 + 0.2]
    row = {**measurement(1, datetime.now(UTC)), "samples": samples, "config": CONFIG}
    with db.transaction() as s:
        conn = s.connection()
        prepared.first(conn, INSERT, row) if write == "prepared" else conn.execute(INSERT, row)
    with db.sessionmaker() as s:
        stored = s.scalars(select(Measurement)).one()
        assert _same(stored.samples, samples)  # msgspec alone would have stored null for NaN and inf
        assert stored.config == CONFIG and stored.flags == ["--x"]


def test_rows_written_by_json_dumps_before_read_back_the_same(db: Database):
    samples = [1.5, float("nan"), 2.0]
    with db.transaction() as s:
        s.execute(INSERT, measurement(1, datetime.now(UTC)))
        s.execute(text("UPDATE measurements SET samples = :t, flags = :f"),
                  {"t": json.dumps(samples), "f": json.dumps({"a": [1, 2]}, indent=2)})  # fmt: skip
    with db.sessionmaker() as s:
        stored = s.scalars(select(Measurement)).one()
        assert _same(stored.samples, samples) and stored.flags == {"a": [1, 2]}


@pytest.mark.parametrize(
    "value", [[1.0, 2.5e-7, 1e22], {"a": {"b": [1, "x", True, None]}}, None, "text", 0, {"1": 2}]
)
def test_json_text_is_standard_json_of_the_same_value(value: object):
    written = json_dumps(value)
    assert json.loads(written) == value and json_loads(written) == value


def test_a_value_neither_can_write_fails_as_it_did_with_the_json_module():
    with pytest.raises(TypeError):
        json_dumps({"x": object()})
