"""The agents' lease and result transactions, in a process of their own.

Why: a server process runs its Python on one core at a time (the GIL). At about 800 lease + report
round trips/s the HTTP handling and the transactions took turns on one core while the second sat
idle. Now the server process reads each lease or result call (HTTP, the bearer token, the path's
job id) and sends (call, token, job id, raw body) to the agent process over a pipe. That process
validates the body, runs the calls that arrived together as one group commit
(``profiler_server.group_commit``) and answers the group in one message; the server process writes
the answers back.

- The process starts with the server (or with the first agent call after it stopped), from a fork
  server that has this module imported (a start takes milliseconds after the first).
- It stops when the server stops, after answering what it was sent, and ends by itself when the
  server process dies (its pipe closes).
- If it dies, the calls it held are answered 503 and the next call starts a new one. Nothing is
  stored twice: a result is stored once per lease, and a retried result answers 409.
- An in-memory SQLite database (one connection sees it) runs the same loop in a thread of the
  server process instead, as does the setting ``agent_process = false``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import pickle
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from profiler_server import devices, jobs
from profiler_server.auth import Principal, authenticate, require_role
from profiler_server.cache import TTLCache
from profiler_server.db import Database
from profiler_server.errors import ServerError, data_error_message
from profiler_server.group_commit import GroupCommit
from shared.api import JobLease, JobResult, LeaseRequest, LeaseResponse, ResultRecorded

log = logging.getLogger(__name__)
INVALID = -1  # the body did not validate: the server process parses it again for FastAPI's 422
_STOP = b""  # sent by the server process: answer what came before, then exit
MAX_GROUP = 16


@dataclass
class AgentContext:
    """What the agent calls need besides their session: the lease length and the caches."""

    lease_s: float
    token_cache: TTLCache = field(default_factory=lambda: TTLCache(ttl_s=300))  # hash -> fixed role, team
    device_cache: TTLCache = field(default_factory=lambda: TTLCache(ttl_s=5))


def lease(ctx: AgentContext, token: str | None, _job_id: None, body: LeaseRequest, session: Session) -> LeaseResponse:
    principal = require_role(authenticate(session, token, ctx.token_cache, commit_touch=False), "agent")
    return LeaseResponse(job=_lease_for(ctx, session, principal, body.agent_id, body.serial))


def result(ctx: AgentContext, token: str | None, job_id: int, body: JobResult, session: Session) -> ResultRecorded:
    principal = require_role(authenticate(session, token, ctx.token_cache, commit_touch=False), "agent")
    measurement_id, _ = jobs.record_result(session, job_id, body)
    if not body.lease_next:
        return ResultRecorded(measurement_id=measurement_id)
    try:  # the agent's next job in the same transaction; a refused lease does not undo the result
        next_job = _lease_for(ctx, session, principal, body.agent_id, body.serial)
    except ServerError as exc:
        return ResultRecorded(measurement_id=measurement_id, next_error=exc.message)
    return ResultRecorded(measurement_id=measurement_id, next_job=next_job)


def _lease_for(ctx: AgentContext, session: Session, principal: Principal, agent_id: str, serial: str) -> JobLease | None:
    device_class = devices.agent_device(session, principal, agent_id, serial, ctx.device_cache)
    # leasing requeues expired jobs, which may complete a campaign: reported after the commit
    return jobs.lease_job(session, serial, device_class, ctx.lease_s, agent_id)


CALLS: dict[str, tuple[type[BaseModel], Callable[..., BaseModel]]] = {
    "lease": (LeaseRequest, lease),
    "result": (JobResult, result),
}


def _answer(ok: bool, value: Any) -> tuple[int, bytes | str]:
    """(200, the JSON answer) or (status, the error's message); 500 carries the traceback."""
    if ok:
        return 200, value.model_dump_json().encode()
    if isinstance(value, ServerError):
        return value.status, value.message
    if isinstance(value, DataError) and (message := data_error_message(value)) is not None:
        return 422, message
    return 500, "".join(traceback.format_exception(value))


def answer_group(committer: GroupCommit, ctx: AgentContext, messages: list[bytes]) -> bytes:
    """Validate, run as one group and answer ``messages`` (each pickled (id, call, token, job id,
    raw body)): a pickled (answers, completed campaigns)."""
    answers: list[tuple[int, int, bytes | str]] = []
    works, ids = [], []
    for message in messages:
        request_id, call, token, job_id, raw = pickle.loads(message)
        model, work = CALLS[call]
        try:
            body = model.model_validate_json(raw)
        except ValidationError:
            answers.append((request_id, INVALID, b""))
            continue
        works.append(partial(work, ctx, token, job_id, body))
        ids.append(request_id)
    completed: list[tuple[int, str, str]] = []
    committer.after_commit = lambda session: completed.extend(session.info.pop("completed_campaigns", []))
    for request_id, (ok, value) in zip(ids, committer.commit(works), strict=True):
        answers.append((request_id, *_answer(ok, value)))
    return pickle.dumps((answers, completed))


def serve(conn: Connection, db: Database | str, lease_s: float) -> None:
    """Answer the calls that arrive on ``conn`` until the stop message or the pipe's end."""
    database = Database(db) if isinstance(db, str) else db
    committer, ctx = GroupCommit(database), AgentContext(lease_s)
    try:
        while True:
            try:
                messages = [conn.recv_bytes()]
                while len(messages) < MAX_GROUP and messages[-1] != _STOP and conn.poll():
                    messages.append(conn.recv_bytes())
            except (EOFError, OSError):  # the server process is gone
                return
            stop = messages[-1] == _STOP
            if stop:
                messages.pop()
            if messages:
                conn.send_bytes(answer_group(committer, ctx, messages))
            if stop:
                return
    finally:
        if isinstance(db, str):
            database.dispose()
        conn.close()


def _serve_process(conn: Connection, db_url: str, lease_s: float) -> None:
    # Ctrl-C reaches the whole process group: the server process stops this one after its answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(conn, db_url, lease_s)


class Unavailable(ServerError):
    status = 503


class AgentCallFailed(RuntimeError):
    """A bug met in the agent process (a 500); the message is its traceback there."""


class _Worker:
    """One running agent process (or thread) and the calls it has not answered yet."""

    def __init__(self, conn: Connection, runner: multiprocessing.process.BaseProcess | threading.Thread) -> None:
        self.conn = conn
        self.runner = runner
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self.reader: threading.Thread | None = None


class AgentProcess:
    """The server process's side: ``await run(call, token, job_id, raw)`` -> (status, answer)."""

    def __init__(self, db: Database, lease_s: float, on_completed: Callable[[int, str, str], None],
                 use_process: bool = True) -> None:  # fmt: skip
        """``on_completed(campaign id, device class, runtime)`` hears of every campaign that a lease
        or result completed, after its commit."""
        self.db = db
        self.lease_s = lease_s
        self.on_completed = on_completed
        self.use_process = use_process and db.engine.url.database not in (None, "", ":memory:")
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._worker: _Worker | None = None

    async def run(self, call: str, token: str | None, job_id: int | None, raw: bytes) -> tuple[int, bytes | str]:
        """The answer to one agent call once its transaction is committed: (200, JSON bytes),
        (``INVALID``, b"") for a body that does not validate, or (status, error message)."""
        worker = self._current()
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        request_id = next(self._ids)
        worker.pending[request_id] = (loop, future)
        try:
            worker.conn.send_bytes(pickle.dumps((request_id, call, token, job_id, raw)))
        except OSError:  # it died just now: its reader answers the others
            worker.pending.pop(request_id, None)
            raise Unavailable("the agent transaction process stopped; try again") from None
        return await future

    def start(self) -> None:
        """Start the process now (the server's start), not with the first agent call."""
        self._current()

    def close(self, timeout_s: float = 30.0) -> None:
        """Answer what was sent, then stop the process (a later call starts a new one)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            worker.conn.send_bytes(_STOP)
        except OSError:
            pass
        if worker.reader is not None:
            worker.reader.join(timeout_s)
        worker.runner.join(timeout_s)

    def _current(self) -> _Worker:
        with self._lock:
            if self._worker is None:
                self._worker = self._start()
            return self._worker

    def _start(self) -> _Worker:
        ours, theirs = multiprocessing.Pipe()
        runner: multiprocessing.process.BaseProcess | threading.Thread
        if self.use_process:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            url = self.db.engine.url.render_as_string(hide_password=False)
            runner = context.Process(target=_serve_process, args=(theirs, url, self.lease_s),
                                     name="agent-transactions", daemon=True)  # fmt: skip
            runner.start()
            theirs.close()
        else:
            runner = threading.Thread(target=serve, args=(theirs, self.db, self.lease_s),
                                      name="agent-transactions", daemon=True)  # fmt: skip
            runner.start()
        worker = _Worker(ours, runner)
        worker.reader = threading.Thread(target=self._read, args=(worker,), name="agent-answers", daemon=True)
        worker.reader.start()
        return worker

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                answers, completed = pickle.loads(worker.conn.recv_bytes())
            except (EOFError, OSError):
                break
            _settle(worker, [(request_id, (True, (status, payload))) for request_id, status, payload in answers])
            for key in completed:
                self.on_completed(*key)
        with self._lock:  # stopped or died: the next call starts a new one
            died = self._worker is worker  # not stopped by close()
            if died:
                self._worker = None
        if died:
            worker.runner.join(5.0)
            log.warning("the agent transaction process ended (exit code %s); the next agent call starts a "
                        "new one", getattr(worker.runner, "exitcode", None))  # fmt: skip
        worker.conn.close()
        gone = Unavailable("the agent transaction process stopped; try again")
        _settle(worker, [(request_id, (False, gone)) for request_id in list(worker.pending)])


def _settle(worker: _Worker, outcomes: list[tuple[int, tuple[bool, Any]]]) -> None:
    # one wake-up of each event loop per group: each call_soon_threadsafe writes to the loop's
    # self-pipe, which cost more than a lease when done per call
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, tuple[bool, Any]]]] = {}
    for request_id, outcome in outcomes:
        loop, future = worker.pending.pop(request_id)
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, settled)
        except RuntimeError:  # that loop is closed: nobody waits for these answers
            pass


def _set_all(settled: list[tuple[asyncio.Future, tuple[bool, Any]]]) -> None:
    for future, (ok, value) in settled:
        if future.done():  # the caller went away (client disconnected)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
