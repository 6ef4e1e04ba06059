"""JSON columns are written with msgspec (fast) and fall back to the standard json module for
what msgspec would change or refuse: nothing stored changes meaning, and rows written before
(``json.dumps`` text, NaN included) read back the same. Real SQLite file, both write paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, text

from profiler_server.db import Artifact, Database, Job, Measurement, Team, prepared, upgrade_database
from profiler_server.db.engine import json_dumps, json_loads
from profiler_server.db.models import utcnow


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path}/json.db")
    upgrade_database(database.engine)
    with database.transaction() as s:
        team = Team(name="t")
        s.add_all([team, Artifact(sha256="a" * 64, format="onnx", size=1, kind="conv", config=None)])
        s.flush()
        s.add_all(Job(team_id=team.id, artifact_sha256="a" * 64, kind="conv", device_class="c", runtime="r")
                  for _ in range(3))  # fmt: skip
    yield database
    database.dispose()


MEAS = Measurement.__table__
INSERT = insert(MEAS).values({c.key: bindparam(c.key, type_=c.type) for c in MEAS.c if c.key != "id"})


def measurement(job_id: int, samples: list[float], flags: object) -> dict:
    return dict(
        job_id=job_id, artifact_sha256="a" * 64, config={"c_in": 8, "k": [3, 3], "note": None}, kind="conv",
        device_class="c", runtime="r", serial="s", median_ms=1.0, mean_ms=1.0, p10_ms=1.0, p90_ms=1.0,
        std_ms=0.0, runs=len(samples), warmup=0, samples=samples, temp_before_c=None, temp_after_c=None,
        tool="t", tool_version="1", flags=flags, unstable=False, created_at=utcnow(),
    )  # fmt: skip


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("write", ["prepared", "sqlalchemy"])
def test_nan_and_infinities_survive_a_json_column(db: Database, write: str):
    samples = [1.25, float("nan"), float("inf"), -float("inf"), 0.1 + 0.2]
    with db.transaction() as s:
        conn = s.connection()
        row = measurement(1, samples, ["--x"])
        prepared.execute(conn, INSERT, row) if write == "prepared" else conn.execute(INSERT, row)
    with db.sessionmaker() as s:
        stored = s.scalars(select(Measurement)).one()
        assert _same(stored.samples, samples)  # msgspec alone would have stored null for NaN and inf
        assert stored.config == {"c_in": 8, "k": [3, 3], "note": None} and stored.flags == ["--x"]


def test_rows_written_by_json_dumps_before_read_back_the_same(db: Database):
    samples = [1.5, float("nan"), 2.0]
    with db.transaction() as s:
        s.execute(INSERT, measurement(1, [1.0], {}))
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
