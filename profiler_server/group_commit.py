"""Group commit for the agents' hot path: the lease and result transactions that arrive while a
commit is under way share the next transaction.

The group runs in order in one transaction. When one piece of work raises (a late result: 409, a
bad token: 401), the transaction is rolled back, that caller gets its error, and the rest of the
group runs again without it (savepoints per piece would cost as much as the commits saved): the
stored outcome is always the one of running the group's work one after another. A caller is
answered only after the commit that holds its work, so nothing is reported done that could still
be lost. When the commit itself fails, every caller of that pass gets the error and none of their
work is stored. Work must not commit by itself, and its only side effects are on the session.

On PostgreSQL two servers' groups can deadlock (one group's result locks a campaign row while its
lease waits for a row the other group's lease holds, and the other group's result waits for that
campaign): the database aborts one of them. That is nobody's error, so the aborted pass is rolled
back and run again (a bounded number of times, after a short random pause), not answered as a 500.

Why: a lease + report round trip was mostly fixed cost per transaction (checking the connection
out of the pool, ``BEGIN IMMEDIATE``, ``COMMIT``, returning it, and handing the one SQLite
connection between worker threads), not its few indexed statements.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from profiler_server.db import Database, prepared

log = logging.getLogger(__name__)
_RETRY = -1  # a pass the database aborted (deadlock, serialization failure): run it again
MAX_CONFLICT_RETRIES = 8
# SQLSTATEs of a transaction the database aborted to resolve a conflict with another transaction
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def is_transient_conflict(exc: BaseException) -> bool:
    """True when the database aborted the transaction over a conflict with another one: running
    it again is the remedy (PostgreSQL's deadlock and serialization failures)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES


class GroupCommit:
    """Runs a group of ``work(session)`` calls in one transaction (see the module docstring); the
    agent process (``profiler_server.agent_process``) hands it the calls that arrived together."""

    def __init__(self, db: Database, after_commit: Callable[[Session], None] | None = None) -> None:
        """``after_commit(session)`` runs after each committed pass (the agent process collects the
        campaigns a result or lease completed there)."""
        self.db = db
        self.after_commit = after_commit
        self.groups = 0  # groups committed or attempted (the work done is ``self.items``)
        self.items = 0

    def commit(self, works: list[Callable[[Session], Any]]) -> list[tuple[bool, Any]]:
        """Each work's outcome, in order: ``(True, its result)`` once committed, ``(False, its
        exception)`` when it raised or the commit failed."""
        outcomes: dict[int, tuple[bool, Any]] = {}
        pending = list(range(len(works)))
        conflicts = 0
        while pending:  # each pass commits every pending item, drops the one that failed or reruns
            last_try = conflicts >= MAX_CONFLICT_RETRIES
            failed = self._try_once(works, pending, outcomes, blame_conflicts=last_try)
            if failed is None:
                break
            if failed == _RETRY:
                conflicts += 1
                time.sleep(random.uniform(0.001, 0.004 * conflicts))  # let the other transaction finish
                continue
            pending.remove(failed)
        self.groups += 1
        self.items += len(works)
        return [outcomes[i] for i in range(len(works))]

    def _try_once(self, works: list[Callable[[Session], Any]], pending: list[int], outcomes: dict,
                  blame_conflicts: bool = False) -> int | None:
        """Run ``pending`` in one transaction and commit; on the first item that raises, roll
        back and return its index (its error is its answer: it ran on the state that the items
        before it leave, which the next pass commits). A pass the database aborted over a
        conflict with another transaction returns ``_RETRY`` unless ``blame_conflicts``."""
        try:
            with self.db.sessionmaker() as session:
                session.info[prepared.HELD_CONNECTION] = session.connection()  # one transaction
                results = {}
                for i in pending:
                    try:
                        results[i] = works[i](session)
                    except Exception as exc:  # this item's error, answered to its caller alone
                        session.info.pop(prepared.HELD_CONNECTION)
                        session.rollback()
                        session.info.pop("completed_campaigns", None)  # rolled back: not completed
                        if is_transient_conflict(exc) and not blame_conflicts:
                            log.info("agent transactions aborted by a conflict; running them again")
                            return _RETRY
                        outcomes[i] = (False, exc)
                        return i
                session.commit()
                if self.after_commit is not None:  # after the commit: hooks may open their own session
                    self.after_commit(session)
        except Exception as exc:  # the commit failed: nothing of this pass is stored
            if is_transient_conflict(exc) and not blame_conflicts:
                return _RETRY
            log.exception("group commit of %d agent transactions failed", len(pending))
            outcomes.update({i: (False, exc) for i in pending})
            return None
        outcomes.update({i: (True, r) for i, r in results.items()})
        return None

