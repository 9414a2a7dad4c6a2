"""One leader among replicas, on the real PostgreSQL: the advisory lock the monitor and the evaluator take."""

from __future__ import annotations

import pytest

from shared.leader import AdvisoryLeader, lock_key

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_of_two_replicas_leads_and_the_other_takes_over_when_it_goes(fresh_database_url: str) -> None:
    clock = Clock()
    first = AdvisoryLeader.for_database(fresh_database_url, "test.leader", retry_s=1, clock=clock)
    second = AdvisoryLeader.for_database(fresh_database_url, "test.leader", retry_s=1, clock=clock)
    other = AdvisoryLeader.for_database(fresh_database_url, "test.another", retry_s=1, clock=clock)
    try:
        assert (first.leads(), second.leads(), other.leads()) == (True, False, True)
        clock.now += 5
        assert (first.leads(), second.leads()) == (True, False)  # the leader keeps it; the other asked again
        first.close()  # as a process killed with -9: its connection, and so its lock, is gone
        assert second.leads() is False  # the other asks again only after retry_s
        clock.now += 1
        assert second.leads() is True
        clock.now += 1
        assert first.leads() is False
    finally:
        for leader in (first, second, other):
            leader.close()


def test_a_replica_that_cannot_reach_the_database_leads_rather_than_stays_silent() -> None:
    away = AdvisoryLeader.for_database("postgresql+psycopg://ferry@127.0.0.1:9/nowhere", "test.away")
    try:
        assert away.leads() is True
    finally:
        away.close()


def test_lock_keys_are_stable_and_distinct() -> None:
    assert lock_key("monitor.alerts") == lock_key("monitor.alerts") != lock_key("evaluator.bakes")
    assert 0 < lock_key("monitor.alerts") < 2**63
