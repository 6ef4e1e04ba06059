"""Group commit for the agents' hot path: lease and result transactions that arrive together share
one transaction and one commit.

Two ways to run a group. On a SQLite file, the work submitted during one turn of the event loop
runs on the loop itself, at its next turn, on a connection of its own that never waits for a lock
(``inline_db``: busy wait 0): when another connection (an export, the reaper, another server
process) holds the write lock, ``BEGIN IMMEDIATE`` fails at once and the group goes to the second
way instead. That is one thread that runs groups on the app's database (waiting for the lock as
long as any transaction would); PostgreSQL always goes this way (its statements would block the
loop on the network).

Either way the group runs in order in one transaction. When one piece of work raises (a late
result: 409, a bad token: 401), the transaction is rolled back, that caller gets its error, and
the rest of the group runs again without it (savepoints per piece would cost as much as the
commits saved): the stored outcome is always the one of running the group's work one after
another. A caller is answered only after the commit that holds its work, so nothing is reported
done that could still be lost. When the commit itself fails, every caller of that pass gets the
error and none of their work is stored. Work must not commit by itself, and its only side effects
are on the session.

Why: a lease + report round trip was mostly fixed cost per transaction (checking the connection
out of the pool, ``BEGIN IMMEDIATE``, ``COMMIT``, returning it), not its few indexed statements;
and handing each group to a thread and back cost two switches of the GIL between the loop and the
thread, each up to the interpreter's switch interval (5 ms) while the loop had work, which set
the round trip's latency and so the rate 8 agents could reach.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from profiler_server.db import Database, prepared

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()
_Item = tuple[Callable[[Session], Any], asyncio.AbstractEventLoop, asyncio.Future]
_Outcome = tuple[bool, Any]


class _LockBusy(Exception):
    """The inline connection could not take the write lock at once."""


class GroupCommit:
    """Runs submitted ``work(session)`` calls in groups, one transaction each: on the event loop
    through ``inline_db`` when given (SQLite), else (and when the lock is busy) on one thread, up
    to ``max_group`` per commit."""

    def __init__(
        self,
        db: Database,
        after_commit: Callable[[Session], None] | None = None,
        max_group: int = 16,
        inline_db: Database | None = None,
    ) -> None:
        """``after_commit(session)`` runs after each committed group (the app passes the campaign
        completion's ``fire_pending``: a result or lease may have completed a campaign); it must
        not block (that one starts a thread per completed campaign)."""
        self.db = db
        self.inline_db = inline_db
        self.after_commit = after_commit
        self.max_group = max_group
        self.groups = 0  # transactions committed or attempted (the work done is ``self.items``)
        self.items = 0
        self.inline_groups = 0  # of ``groups``, those run on the event loop
        self._batch: list[_Item] = []  # submitted on the loop, not yet run
        self._closed = False
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="group-commit", daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[Session], T]) -> T:
        """The result of ``work(session)`` once it is committed (its exception, if it raised)."""
        if self._closed or not self._thread.is_alive():
            raise RuntimeError("the group commit thread has stopped (the server is shutting down)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        if self.inline_db is None:
            self._queue.put((work, loop, future))
        else:
            self._batch.append((work, loop, future))
            if len(self._batch) == 1:  # the first of this turn: run the batch at the loop's next turn
                loop.call_soon(self._run_batch)
        return await future

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the work already submitted, then stop the thread."""
        self._closed = True
        if self._batch:  # submitted on the loop, not yet run: the thread takes it
            batch, self._batch = self._batch, []
            for item in batch:
                self._queue.put(item)
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self.inline_db is not None:
            self.inline_db.dispose()

    def _run_batch(self) -> None:
        group, self._batch = self._batch, []
        try:
            for start in range(0, len(group), self.max_group):
                self._commit_group(group[start : start + self.max_group], self.inline_db)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("group commit on the event loop failed")
            _settle_all([(future, (False, exc)) for _, _, future in group])

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group, stop = [first], False
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            self._commit_group(group, self.db)
            if stop:
                return

    def _commit_group(self, group: list[_Item], db: Database) -> None:
        outcomes: dict[int, _Outcome] = {}
        pending = list(range(len(group)))
        while pending:  # each pass either commits every pending item or drops the one that failed
            try:
                failed = self._try_once(group, pending, outcomes, db)
            except _LockBusy:  # inline only: the thread runs what is left, waiting for the lock
                for i in pending:
                    self._queue.put(group[i])
                break
            if failed is None:
                break
            pending.remove(failed)
        if outcomes:  # nothing when the whole group went to the thread
            self.groups += 1
            self.inline_groups += db is self.inline_db
            self.items += len(outcomes)
        _deliver([(group[i][1], group[i][2], outcome) for i, outcome in outcomes.items()])

    def _try_once(self, group: list[_Item], pending: list[int], outcomes: dict, db: Database) -> int | None:
        """Run ``pending`` in one transaction and commit; on the first item that raises, roll
        back and return its index (its error is its answer: it ran on the state that the items
        before it leave, which the next pass commits)."""
        try:
            with db.sessionmaker() as session:
                session.info[prepared.HELD_CONNECTION] = _begin(session, inline=db is self.inline_db)
                results = {}
                for i in pending:
                    try:
                        results[i] = group[i][0](session)
                    except Exception as exc:  # this item's error, answered to its caller alone
                        outcomes[i] = (False, exc)
                        session.info.pop(prepared.HELD_CONNECTION)
                        session.rollback()
                        session.info.pop("completed_campaigns", None)  # rolled back: not completed
                        return i
                session.commit()
                if self.after_commit is not None:  # after the commit: hooks may open their own session
                    self.after_commit(session)
        except _LockBusy:
            raise
        except Exception as exc:  # the commit failed: nothing of this pass is stored
            log.exception("group commit of %d agent transactions failed", len(pending))
            outcomes.update({i: (False, exc) for i in pending})
            return None
        outcomes.update({i: (True, r) for i, r in results.items()})
        return None


def _begin(session: Session, inline: bool) -> Any:
    """The session's connection, its transaction begun (``BEGIN IMMEDIATE`` on SQLite); inline, a
    write lock held elsewhere raises :class:`_LockBusy` instead of waiting."""
    try:
        return session.connection()
    except OperationalError as exc:
        if inline and "locked" in str(exc.orig):
            raise _LockBusy from exc
        raise


def _deliver(settled: list[tuple[asyncio.AbstractEventLoop, asyncio.Future, _Outcome]]) -> None:
    """Answer the callers: directly on the running loop, else with one wake-up per loop (each
    ``call_soon_threadsafe`` writes to the loop's self-pipe)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, _Outcome]]] = {}
    for loop, future, outcome in settled:
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, items in by_loop.items():
        if loop is running:
            _settle_all(items)
        else:
            loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(settled: list[tuple[asyncio.Future, _Outcome]]) -> None:
    for future, (ok, value) in settled:
        if future.done():  # the caller went away (client disconnected)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
