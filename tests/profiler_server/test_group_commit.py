"""Group commit of agent transactions on a real SQLite file: work given together shares one
commit, a failing piece of work answers its own error without losing the others', and a pass the
database aborted runs again."""

from __future__ import annotations

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


def test_work_given_together_shares_one_commit(db: Database) -> None:
    committer = GroupCommit(db)
    outcomes = committer.commit([add_team(f"t{i}") for i in range(10)])
    assert all(ok for ok, _ in outcomes) and len({team_id for _, team_id in outcomes}) == 10
    assert team_names(db) == {f"t{i}" for i in range(10)}
    assert (committer.groups, committer.items) == (1, 10)


def test_a_failing_piece_of_work_answers_its_error_and_the_rest_of_its_group_commits(db: Database) -> None:
    committed_groups = []
    committer = GroupCommit(db, after_commit=lambda session: committed_groups.append(session))
    works = [add_team("a"), add_team("b", fail_after=True), add_team("c"), add_team("a")]  # last: unique name taken
    outcomes = committer.commit(works)
    assert [ok for ok, _ in outcomes] == [True, False, True, False]
    assert isinstance(outcomes[1][1], Conflict)  # its own error; its row was rolled back
    assert isinstance(outcomes[3][1], Exception)  # the duplicate name, refused by the database
    assert team_names(db) == {"a", "c"}
    with db.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Team)) == 2
    assert len(committed_groups) == 1  # a and c committed together despite the failures between them


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

    committer = GroupCommit(db)
    (beside, after_abort) = committer.commit([add_team("beside"), deadlocked_once])
    assert beside[0] and after_abort[0], (beside, after_abort)
    assert team_names(db) == {"beside", "after-abort"}, "each piece of work is stored once"

    def always(session: Session) -> None:
        raise _Deadlock("deadlock detected")

    ((ok, outcome),) = committer.commit([always])
    assert not ok
    assert isinstance(outcome, _Deadlock), "a conflict that never clears ends in an answer"
