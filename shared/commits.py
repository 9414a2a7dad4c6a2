"""Offset commits for the consumer loop: once per batch without waiting, for sure when it matters.

After each batch the loop sends the finished offsets with ``commit_async`` and goes on: the commit's
round trip (about 10 ms on a busy broker) overlaps the next batch instead of stalling the loop. What
always travels is a partition's latest finished offset, so a failed commit is simply retried with
whatever is latest then, and committed offsets only move forward. Where the loop must be sure
(after each message handled with care, on close) it commits and waits; on revoke the listener
commits the revoked partitions' latest offsets before they go.

Any failure (a rebalance, a timeout, the broker away) leaves the partition pending; it is retried
after a back-off. An async commit not answered within the commit timeout counts as failed:
kafka-python may hold a failed commit's callback back until the next commit, and an idle loop makes
none. A partition no longer ours is dropped: its next owner re-reads from the last commit
(at-least-once; the handlers are idempotent).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from shared.consumer_support import Backoff

log = logging.getLogger("shared.kafka")


class OffsetCommitter:
    """The finished offsets of one consumer and their way to Kafka (see the module's docstring)."""

    def __init__(self, consumer: KafkaConsumer, *, timeout_ms: int) -> None:
        self._consumer = consumer
        self._timeout_ms = timeout_ms
        self._latest: dict[TopicPartition, OffsetAndMetadata] = {}
        self._pending: set[TopicPartition] = set()
        self._in_flight: dict[int, tuple[set[TopicPartition], float]] = {}  # async commit → partitions, deadline
        self._answers: deque[tuple[int, Exception | None]] = deque()  # filled by kafka-python's IO thread
        self._tokens = itertools.count()
        self._backoff = Backoff()
        self._not_before = 0.0

    def finished(self, partition: TopicPartition, next_offset: int, leader_epoch: int | None) -> None:
        """Everything before ``next_offset`` in this partition is done and its effects are durable."""
        self._latest[partition] = OffsetAndMetadata(next_offset, "", leader_epoch if leader_epoch is not None else -1)
        self._pending.add(partition)

    @property
    def pending(self) -> bool:
        self._take_failures()
        return bool(self._pending)

    def send(self) -> None:
        """Send what is pending without waiting (once per batch)."""
        offsets = self._due()
        if not offsets:
            return
        self._pending.difference_update(offsets)
        token = next(self._tokens)
        self._in_flight[token] = (set(offsets), time.monotonic() + self._timeout_ms / 1000)
        try:
            self._consumer.commit_async(offsets, callback=partial(self._on_answer, token))
        except Exception as error:  # noqa: BLE001 - e.g. no coordinator yet: pending again, retried later
            self._answers.append((token, error))

    def commit(self, *, everything: bool = False, force: bool = False) -> bool:
        """Commit and wait; True when nothing is left pending. ``everything``: every partition's latest,
        sent before or not (on close, so that no commit still in flight is left to chance)."""
        offsets = self._due(force=force, everything=everything)
        if offsets:
            try:
                self._consumer.commit(offsets, timeout_ms=self._timeout_ms)
            except Exception as error:  # noqa: BLE001 - any failure: pending, and tried again later
                self._failure(set(offsets), error)
                return False
            self._pending.difference_update(offsets)
            self._superseded(offsets)
            self._succeeded()
        return not self._pending

    def take(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """The latest offsets of partitions that are leaving (for the revoke listener to commit)."""
        taken = {tp: self._latest.pop(tp) for tp in list(partitions) if tp in self._latest}
        self._pending.difference_update(taken)
        return taken

    def clear(self) -> None:
        """Forget every offset: at close, once committed (or, the broker away, left to the next owner)."""
        self._pending.clear()
        self._latest.clear()
        self._in_flight.clear()

    def _due(self, *, force: bool = False, everything: bool = False) -> dict[TopicPartition, OffsetAndMetadata]:
        self._take_failures()
        if not force and time.monotonic() < self._not_before:
            return {}
        owned = self._consumer.assignment()
        for partition in [tp for tp in self._latest if tp not in owned]:
            del self._latest[partition]  # moved to another member, which re-reads from the last commit
        self._pending.intersection_update(self._latest)
        wanted = self._latest if everything else self._pending
        return {tp: self._latest[tp] for tp in wanted}

    def _on_answer(self, token: int, offsets: Any, result: Any) -> None:
        """kafka-python's callback, on its IO thread: only hand the answer over to the loop's thread."""
        self._answers.append((token, result if isinstance(result, Exception) else None))

    def _take_failures(self) -> None:
        while self._answers:
            token, error = self._answers.popleft()
            entry = self._in_flight.pop(token, None)
            if entry is None:
                continue
            if error is None:
                self._succeeded()
            else:
                self._failure(entry[0] & set(self._latest), error)
        now = time.monotonic()
        for token, (partitions, deadline) in list(self._in_flight.items()):
            if now > deadline:
                del self._in_flight[token]
                unanswered = KafkaTimeoutError(f"commit not answered in {self._timeout_ms / 1000:.0f}s")
                self._failure(partitions & set(self._latest), unanswered)

    def _superseded(self, committed: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """A commit that waited carried the latest offsets: older commits still in flight no longer matter."""
        for token, (partitions, _) in list(self._in_flight.items()):
            partitions -= set(committed)
            if not partitions:
                del self._in_flight[token]

    def _failure(self, partitions: set[TopicPartition], error: Exception) -> None:
        self._pending.update(partitions)
        delay = self._backoff.next()
        self._not_before = time.monotonic() + delay
        log.warning(
            "offset commit failed (%s: %s); %d partitions stay pending, retrying in %.1fs",
            type(error).__name__,
            error,
            len(partitions),
            delay,
        )

    def _succeeded(self) -> None:
        self._backoff.reset()
        self._not_before = 0.0
