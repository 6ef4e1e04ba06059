"""Group commit of agent transactions on a real SQLite file: work that arrives together shares one
commit, a failing piece of work answers its own error without losing the others', and callers are
answered only with committed work."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from profiler_server.db import Database, Team, upgrade_database
from profiler_server.errors import Conflict
from profiler_server.group_commit import GroupCommit


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path}/group.db")
    upgrade_database(database.engine)
    yield database
    database.dispose()


def add_team(name: str, fail_after: bool = False):
    def work(session: Session) -> int:
        team_id = session.execute(insert(Team.__table__).values(name=name).returning(Team.__table__.c.id)).scalar_one()
        if fail_after:
            raise Conflict(f"{name} refused after writing")
        return team_id

    return work


def team_names(db: Database) -> set[str]:
    with db.sessionmaker() as session:
        return set(session.scalars(select(Team.name)))


async def held_then_released(committer: GroupCommit, works: list) -> list:
    """Hold the commit thread on a first piece of work until ``works`` are all queued behind it, so
    that they form one group, then gather their outcomes."""
    release = threading.Event()
    blocker = asyncio.ensure_future(committer.run(lambda _session: release.wait(10)))
    await asyncio.sleep(0.05)  # the thread has taken the blocker
    tasks = [asyncio.ensure_future(committer.run(work)) for work in works]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if committer._queue.qsize() == len(works):
            break
    release.set()
    await blocker
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_work_that_arrives_together_shares_one_commit(db: Database) -> None:
    committer = GroupCommit(db)
    try:
        outcomes = asyncio.run(held_then_released(committer, [add_team(f"t{i}") for i in range(10)]))
    finally:
        committer.close()
    assert all(isinstance(o, int) for o in outcomes) and len(set(outcomes)) == 10
    assert team_names(db) == {f"t{i}" for i in range(10)}
    assert (committer.groups, committer.items) == (2, 11)  # the blocker alone, then the ten together


def test_a_failing_piece_of_work_answers_its_error_and_the_rest_of_its_group_commits(db: Database) -> None:
    committer = GroupCommit(db)
    works = [add_team("a"), add_team("b", fail_after=True), add_team("c"), add_team("a")]  # last: unique name taken
    try:
        outcomes = asyncio.run(held_then_released(committer, works))
    finally:
        committer.close()
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int)
    assert isinstance(outcomes[1], Conflict)  # its own error; its row was rolled back
    assert isinstance(outcomes[3], Exception)  # the duplicate name, refused by the database
    assert team_names(db) == {"a", "c"}
    with db.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Team)) == 2
    assert committer.groups == 2  # a and c committed together despite the failures between them


def test_close_finishes_queued_work_and_later_work_is_refused(db: Database) -> None:
    committer = GroupCommit(db)

    async def submit_then_close() -> list:
        tasks = [asyncio.ensure_future(committer.run(add_team(f"q{i}"))) for i in range(5)]
        await asyncio.sleep(0)
        await asyncio.to_thread(committer.close)
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(submit_then_close())) == 5
    assert team_names(db) == {f"q{i}" for i in range(5)}
    with pytest.raises(RuntimeError, match="stopped"):
        asyncio.run(committer.run(add_team("late")))


class _Deadlock(Exception):
    """What a DB driver raises when the database aborted the transaction to break a deadlock."""

    sqlstate = "40P01"


def test_a_pass_the_database_aborted_over_a_conflict_runs_again_instead_of_failing(db: Database) -> None:
    """PostgreSQL aborts one of two deadlocked transactions: nobody's error, so the group runs again
    and every caller gets its committed result; a conflict that never clears is answered, bounded."""
    aborts = iter([True, True])

    def deadlocked_once(session: Session) -> int:
        team_id = add_team("after-abort")(session)
        if next(aborts, False):
            raise _Deadlock("deadlock detected")
        return team_id

    async def main() -> list:
        return await held_then_released(committer, [add_team("beside"), deadlocked_once])

    committer = GroupCommit(db)
    try:
        beside, after_abort = asyncio.run(main())
        assert isinstance(beside, int) and isinstance(after_abort, int)
        assert team_names(db) == {"beside", "after-abort"}, "each piece of work is stored once"

        def always(session: Session) -> None:
            raise _Deadlock("deadlock detected")

        async def forever() -> list:
            return await asyncio.gather(committer.run(always), return_exceptions=True)

        (outcome,) = asyncio.run(forever())
        assert isinstance(outcome, _Deadlock), "a conflict that never clears ends in an answer"
    finally:
        committer.close()
