"""The delivery-attempt log: the SQLite file and the in-memory fake pass the same tests; the crash guard."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.structs import TopicPartition

from shared.delivery import CrashGuard, DeliveryLog, MemoryDeliveryLog, SqliteDeliveryLog

P0, P1 = TopicPartition("t.model.trained", 0), TopicPartition("t.model.trained", 1)
Record = namedtuple("Record", "offset")


@pytest.fixture(params=["sqlite", "memory"])
def delivery_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeliveryLog]:
    log: DeliveryLog = (
        SqliteDeliveryLog(tmp_path / "delivery.sqlite") if request.param == "sqlite" else MemoryDeliveryLog()
    )
    yield log
    log.close()


class TestDeliveryLog:
    def test_marks_are_per_group_and_partition_and_a_new_batch_replaces_the_last(
        self, delivery_log: DeliveryLog
    ) -> None:
        delivery_log.mark_in_flight("g", {P0: (0, 49), P1: (10, 12)})
        delivery_log.mark_in_flight("g", {P0: (50, 99)})
        delivery_log.mark_in_flight("other", {P0: (5, 6)})
        assert delivery_log.in_flight("g", [P0, P1]) == {P0: (50, 99), P1: (10, 12)}
        assert delivery_log.in_flight("g", [P1]) == {P1: (10, 12)}

    def test_attempts_are_counted_and_forgotten(self, delivery_log: DeliveryLog) -> None:
        assert delivery_log.attempts("g", P0, 7) is None
        delivery_log.set_attempts("g", P0, 7, 2)
        assert delivery_log.attempts("g", P0, 7) == 2
        assert delivery_log.attempts("g", P1, 7) is None
        delivery_log.forget_attempts("g", P0, 7)
        assert delivery_log.attempts("g", P0, 7) is None

    def test_release_forgets_marks_and_counts_of_those_partitions_only(self, delivery_log: DeliveryLog) -> None:
        delivery_log.mark_in_flight("g", {P0: (0, 9), P1: (0, 9)})
        delivery_log.set_attempts("g", P0, 3, 2)
        delivery_log.set_attempts("g", P1, 3, 2)
        delivery_log.release("g", [P0])
        assert delivery_log.in_flight("g", [P0, P1]) == {P1: (0, 9)}
        assert (delivery_log.attempts("g", P0, 3), delivery_log.attempts("g", P1, 3)) == (None, 2)


def test_the_sqlite_log_survives_its_process(tmp_path: Path) -> None:
    first = SqliteDeliveryLog(tmp_path / "d.sqlite")
    first.mark_in_flight("g", {P0: (3, 8)})
    first.set_attempts("g", P0, 5, 2)
    # No close(): a process killed mid-batch never closes its file.
    second = SqliteDeliveryLog(tmp_path / "d.sqlite")
    assert second.in_flight("g", [P0]) == {P0: (3, 8)}
    assert second.attempts("g", P0, 5) == 2


def test_a_clean_hand_over_releases_the_marks_and_a_crash_leaves_them_for_the_next_owner() -> None:
    log = MemoryDeliveryLog()
    crashed = CrashGuard(log, group="g", max_attempts=3)
    crashed.mark({P0: [Record(10), Record(11), Record(12)], P1: [Record(4)]})
    crashed.hand_over([P1], clean=True)  # P1 left cleanly; the process then died with P0's batch in hand

    heir = CrashGuard(log, group="g", max_attempts=3)
    assert heir.take_over([P0, P1]) == {P0: (10, 12)}
    assert list(heir.careful_partitions) == [P0]
    assert heir.careful_until(P0, 11) == 12
    assert heir.previous_attempts(P0, 11) == 1  # the crashed batch was the first attempt
    assert heir.careful_until(P0, 13) is None  # past the crashed batch: care ends
    assert list(heir.careful_partitions) == []


def test_a_partition_under_care_keeps_its_counts_when_it_moves_on_cleanly() -> None:
    log = MemoryDeliveryLog()
    guard = CrashGuard(log, group="g", max_attempts=3)
    log.mark_in_flight("g", {P0: (0, 5)})
    guard.take_over([P0])
    guard.set_attempts(P0, 2, 2)
    guard.hand_over([P0], clean=True)
    assert log.in_flight("g", [P0]) == {P0: (0, 5)}
    assert log.attempts("g", P0, 2) == 2


def test_a_batch_committed_before_the_restart_needs_no_care() -> None:
    log = MemoryDeliveryLog()
    log.mark_in_flight("g", {P0: (0, 5)})
    guard = CrashGuard(log, group="g", max_attempts=3)
    guard.take_over([P0])
    guard.mark({P0: [Record(6), Record(7)]})  # the next message is past the old batch: it was committed
    assert list(guard.careful_partitions) == []
    assert log.in_flight("g", [P0]) == {P0: (6, 7)}
