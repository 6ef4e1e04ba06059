"""Hot-path statements run on SQLite's own connection, compiled once from their Core form.

SQLAlchemy's execute path (compiled-cache lookup, execution context, parameter processing, result
metadata) cost several times more than SQLite running the statement: about 100 µs against 10-20 µs
for the indexed lookups of a lease or a result, and a lease + report round trip runs about ten of
them. :func:`first` compiles a Core statement once for the connection's dialect and, on SQLite,
runs it through ``sqlite3`` directly (whose per-connection cache keeps it prepared), converting
parameters and result columns with the same type processors SQLAlchemy would use (UTC datetimes,
JSON), so what is stored and read back is identical. Any other database goes through SQLAlchemy
unchanged.

The statement runs on the connection (and in the transaction) that the caller's session holds:
the session's pending ORM changes must be flushed first, and ORM objects already loaded do not
see what such a statement wrote.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from profiler_server.db.models import UTCDateTime

_Processor = Callable[[Any], Any] | None


class SqlitePrepared:
    """One Core statement as SQLite SQL with qmark parameters, its parameter order and defaults
    (the literals Core turned into parameters) and the type processors of parameters and columns."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)
        processors = {name: _bind_processor(bind.type, dialect) for bind, name in compiled.bind_names.items()}
        self.order = [
            (name, processors.get(name), self.defaults[name]) for name in compiled.positiontup or ()
        ]
        columns = list(getattr(statement, "exported_columns", ()))
        self.columns = [_result_processor(c.type, dialect) for c in columns]
        self.row_type = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None

    def parameters(self, params: Mapping[str, Any]) -> tuple:
        values = []
        for name, process, default in self.order:
            value = params.get(name, default)
            values.append(value if process is None or value is None else process(value))
        return tuple(values)

    def first(self, raw: Any, params: Mapping[str, Any]) -> Any:
        """The first row as a named tuple (a plain tuple for a textual statement; None without
        rows). The cursor is read to its end, so an UPDATE ... RETURNING has finished."""
        rows = raw.execute(self.sql, self.parameters(params)).fetchall()
        if not rows:
            return None
        row = rows[0]
        if self.row_type is None:
            return row
        values = [v if p is None or v is None else p(v) for p, v in zip(self.columns, row, strict=True)]
        return self.row_type(*values)


def _utc_text(value: datetime) -> str:
    """What SQLAlchemy stores for a :class:`UTCDateTime` on SQLite (naive UTC, microseconds)."""
    if value.tzinfo is UTC:  # the usual case, without the two copies below (half the cost)
        return value.isoformat(" ", "microseconds")[:26]
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def _utc_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _bind_processor(type_: TypeEngine, dialect: Dialect) -> _Processor:
    # UTC datetimes are in every hot statement: a direct format costs a fifth of SQLAlchemy's chain
    if isinstance(type_, UTCDateTime):
        return _utc_text
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: TypeEngine, dialect: Dialect) -> _Processor:
    if isinstance(type_, UTCDateTime):
        return _utc_datetime
    return type_.dialect_impl(dialect).result_processor(dialect, None)


HELD_CONNECTION = "prepared.held_connection"  # session.info key: the connection of its transaction


def connection(session: Session) -> Connection:
    """The connection of the session's transaction. A session that holds one transaction for many
    pieces of work (the group commit) names it in ``session.info[HELD_CONNECTION]``: asking the
    session each time cost about 90 µs, five times per lease + report round trip."""
    held = session.info.get(HELD_CONNECTION)
    return held if held is not None else session.connection()


_compiled: dict[tuple[int, str], tuple[Executable, SqlitePrepared]] = {}


def first(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> Any:
    """``conn.execute(statement, params).first()``, with attribute access to the columns; on SQLite
    run on the raw connection from a statement compiled once. ``statement`` must be built once
    (module level or cached): it is remembered by identity."""
    if conn.dialect.name != "sqlite":
        return conn.execute(statement, dict(params)).first()
    key = (id(statement), conn.dialect.name)
    entry = _compiled.get(key)
    if entry is None or entry[0] is not statement:
        entry = _compiled[key] = (statement, SqlitePrepared(statement, conn.dialect))
    return entry[1].first(conn.connection.driver_connection, params)


def execute(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> None:
    """Run a statement without rows (UPDATE, INSERT) the same way as :func:`first`."""
    if conn.dialect.name != "sqlite":
        conn.execute(statement, dict(params))
        return
    first(conn, statement, params)
