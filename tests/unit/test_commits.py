"""Offset commits: sent once per batch without waiting, retried with the latest offset, never backwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaConnectionError, RebalanceInProgressError
from kafka.structs import TopicPartition

from shared.commits import OffsetCommitter

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass
class FakeConsumer:
    """Records commits; ``async_results`` decide how the async ones end (None: success), in order."""

    owned: set[TopicPartition] = field(default_factory=lambda: {P0, P1})
    async_results: list[Exception | None] = field(default_factory=list)
    sync_failures: list[Exception] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    sent: list[dict[TopicPartition, int]] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    def commit_async(self, offsets: dict[TopicPartition, Any], callback: Any = None) -> None:
        self.sent.append({tp: o.offset for tp, o in offsets.items()})
        self.callbacks.append((offsets, callback))

    def answer(self) -> None:
        """The broker answers every async commit in flight, in order."""
        while self.callbacks:
            offsets, callback = self.callbacks.pop(0)
            result = self.async_results.pop(0) if self.async_results else None
            if result is None:
                self.committed.update({tp: o.offset for tp, o in offsets.items()})
            callback(offsets, result)

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int | None = None) -> None:
        if self.sync_failures:
            raise self.sync_failures.pop(0)
        self.committed.update({tp: o.offset for tp, o in offsets.items()})


def test_each_batch_sends_the_latest_offsets_once_without_waiting() -> None:
    consumer = FakeConsumer()
    commits = OffsetCommitter(consumer, timeout_ms=1000)  # type: ignore[arg-type]
    commits.finished(P0, 10, 0)
    commits.finished(P0, 12, 0)
    commits.finished(P1, 3, None)
    commits.send()
    commits.send()  # nothing new: nothing sent
    assert consumer.sent == [{P0: 12, P1: 3}]
    consumer.answer()
    assert consumer.committed == {P0: 12, P1: 3} and not commits.pending


def test_a_failed_async_commit_is_retried_with_the_latest_offset_after_a_back_off() -> None:
    consumer = FakeConsumer(async_results=[RebalanceInProgressError()])
    commits = OffsetCommitter(consumer, timeout_ms=1000)  # type: ignore[arg-type]
    commits.finished(P0, 5, 0)
    commits.send()
    consumer.answer()  # failed
    commits.finished(P0, 9, 0)
    assert commits.pending
    commits.send()  # within the back-off: held
    assert consumer.sent == [{P0: 5}]
    assert commits.commit(force=True)  # the latest, not the failed one
    assert consumer.committed == {P0: 9}


def test_a_retried_commit_never_moves_a_partition_backwards() -> None:
    consumer = FakeConsumer(async_results=[KafkaConnectionError("away"), None])
    commits = OffsetCommitter(consumer, timeout_ms=1000)  # type: ignore[arg-type]
    commits.finished(P0, 5, 0)
    commits.send()
    commits.finished(P0, 8, 0)
    commits.commit(force=True)  # 8 committed while 5 is still in flight
    consumer.answer()  # then 5 fails
    commits.commit(force=True)
    assert consumer.committed == {P0: 8}


def test_a_failed_sync_commit_stays_pending() -> None:
    consumer = FakeConsumer(sync_failures=[KafkaConnectionError("away")])
    commits = OffsetCommitter(consumer, timeout_ms=1000)  # type: ignore[arg-type]
    commits.finished(P1, 4, 0)
    assert not commits.commit(force=True)
    assert commits.pending
    assert commits.commit(force=True) and consumer.committed == {P1: 4}


def test_on_close_everything_is_committed_even_what_is_still_in_flight() -> None:
    consumer = FakeConsumer()
    commits = OffsetCommitter(consumer, timeout_ms=1000)  # type: ignore[arg-type]
    commits.finished(P0, 7, 0)
    commits.send()  # in flight, never answered
    assert commits.commit(everything=True, force=True)
    assert consumer.committed == {P0: 7}


def test_leaving_partitions_hand_over_their_latest_offsets_and_foreign_ones_are_dropped() -> None:
    consumer = FakeConsumer()
    commits = OffsetCommitter(consumer, timeout_ms=1000)  # type: ignore[arg-type]
    commits.finished(P0, 3, 0)
    commits.finished(P1, 6, 0)
    assert {tp: o.offset for tp, o in commits.take([P1]).items()} == {P1: 6}
    consumer.owned = set()  # P0 moved on too, without a revoke
    commits.send()
    assert consumer.sent == [] and not commits.pending


def test_an_async_commit_never_answered_counts_as_failed_and_is_sent_again() -> None:
    consumer = FakeConsumer()
    commits = OffsetCommitter(consumer, timeout_ms=0)  # type: ignore[arg-type]
    commits.finished(P0, 4, 0)
    commits.send()  # lost in an outage: no answer ever comes
    assert commits.pending  # past its deadline at once
    assert commits.commit(force=True) and consumer.committed == {P0: 4}
