"""Engine and sessions. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions.

``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of every transaction, so two concurrent
lease transactions serialize instead of both reading the same queued job (or deadlocking when a
deferred reader tries to upgrade to a writer). Other backends keep their default isolation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def json_dumps(value: Any) -> str:
    """JSON columns' text: msgspec, ten times faster than ``json.dumps`` on the measurement samples
    stored with every result. A value msgspec would write differently (it writes NaN and infinities
    as null) or cannot write takes ``json.dumps``, so nothing stored changes meaning."""
    try:
        out = _ENCODER.encode(value)
    except (TypeError, msgspec.EncodeError):
        return json.dumps(value)
    return json.dumps(value) if b"null" in out else out.decode()


def json_loads(text: str | bytes) -> Any:
    """The reverse of :func:`json_dumps` (``json.loads`` for what msgspec refuses, e.g. NaN)."""
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def _begin_immediate(conn: Any) -> None:
    # on the driver's connection: SQLAlchemy's execute path cost 40 us, a sixth of a group commit
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for any SQLAlchemy URL; creates the parent folder of a SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            url, pool_pre_ping=True, json_serializer=json_dumps, json_deserializer=json_loads
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection per process: SQLite allows one writer anyway, and threads queueing on the pool
    # wake immediately, where SQLite's busy handler would poll with sleeps of up to 100 ms.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=1,
        max_overflow=0,
        pool_timeout=120,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
    )
    event.listen(engine, "connect", _sqlite_pragmas)

    # Let SQLAlchemy, not pysqlite, emit BEGIN (pysqlite's implicit BEGIN is deferred).
    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    event.listen(engine, "begin", _begin_immediate)
    return engine


class Database:
    """An engine plus its two ways to a session; one per app.

    - ``transaction()``: a session whose one transaction commits when the block ends normally and
      rolls back on an exception (worker threads, hooks, anything that writes in one go).
    - ``sessionmaker()``: a plain session that commits nothing by itself: call
      ``session.commit()`` after a write (requests, reads, several transactions in a row).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
