"""Delivery attempts, counted durably, so that a message that kills its consumer is not redelivered forever.

The hot path writes one row per partition per poll batch: "partition P is in flight from offset X to Y".
A clean stop or revoke releases those rows. A process that finds such a row for a partition it is
given, with the partition's next message at or below Y, knows its predecessor died inside that batch;
it handles the partition carefully up to Y: one message at a time, each attempt counted here before
the handler runs and committed after. A message whose count reaches the limit is dead-lettered
unhandled. The batch that was in flight counts as every message's first attempt.

SQLite in WAL mode with ``synchronous=NORMAL``: a row survives the process being killed (which is
the failure this guards against); a power cut may lose the last rows, and with them one attempt.
Counts are per host (the file lives in the service's state folder): a partition that moves to a
consumer on another host starts counting again there.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kafka.structs import TopicPartition

Span = tuple[int, int]
"""First and last offset of a batch."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS in_flight (
    consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition)
);
CREATE TABLE IF NOT EXISTS attempts (
    consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition, offset)
);
"""


class DeliveryLog(Protocol):
    """Where a consumer loop marks what it is handling; see the module's docstring."""

    def mark_in_flight(self, group: str, spans: Mapping[TopicPartition, Span]) -> None: ...

    def in_flight(self, group: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Span]: ...

    def release(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        """Forget what was in flight on these partitions, and their attempt counts (a clean hand-over)."""
        ...

    def attempts(self, group: str, partition: TopicPartition, offset: int) -> int | None: ...

    def set_attempts(self, group: str, partition: TopicPartition, offset: int, count: int) -> None: ...

    def forget_attempts(self, group: str, partition: TopicPartition, offset: int) -> None:
        """The message finished: its count no longer matters."""
        ...

    def close(self) -> None: ...


class SqliteDeliveryLog:
    """The delivery log in one SQLite file (e.g. ``$FERRY_HOME/<service>/delivery.sqlite``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One loop uses it, but close() may come from another thread than the one that built it.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def mark_in_flight(self, group: str, spans: Mapping[TopicPartition, Span]) -> None:
        rows = [(group, tp.topic, tp.partition, first, last) for tp, (first, last) in spans.items()]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO in_flight VALUES (?, ?, ?, ?, ?)", rows)

    def in_flight(self, group: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Span]:
        wanted = set(partitions)
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, partition, first_offset, last_offset FROM in_flight WHERE consumer_group = ?", (group,)
            ).fetchall()
        found = {TopicPartition(topic, partition): (first, last) for topic, partition, first, last in rows}
        return {tp: span for tp, span in found.items() if tp in wanted}

    def release(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        keys = [(group, tp.topic, tp.partition) for tp in partitions]
        with self._lock, self._db:
            for table in ("in_flight", "attempts"):
                self._db.executemany(
                    f"DELETE FROM {table} WHERE consumer_group = ? AND topic = ? AND partition = ?", keys
                )

    def attempts(self, group: str, partition: TopicPartition, offset: int) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT count FROM attempts WHERE consumer_group = ? AND topic = ? AND partition = ? AND offset = ?",
                (group, partition.topic, partition.partition, offset),
            ).fetchone()
        return int(row[0]) if row else None

    def set_attempts(self, group: str, partition: TopicPartition, offset: int, count: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?)",
                (group, partition.topic, partition.partition, offset, count),
            )

    def forget_attempts(self, group: str, partition: TopicPartition, offset: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "DELETE FROM attempts WHERE consumer_group = ? AND topic = ? AND partition = ? AND offset = ?",
                (group, partition.topic, partition.partition, offset),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryDeliveryLog:
    """The same log in memory: for unit tests, and for consumers whose crashes need no counting."""

    def __init__(self) -> None:
        self.spans: dict[tuple[str, TopicPartition], Span] = {}
        self.counts: dict[tuple[str, TopicPartition, int], int] = {}

    def mark_in_flight(self, group: str, spans: Mapping[TopicPartition, Span]) -> None:
        self.spans.update({(group, tp): span for tp, span in spans.items()})

    def in_flight(self, group: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Span]:
        return {tp: self.spans[(group, tp)] for tp in partitions if (group, tp) in self.spans}

    def release(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        for tp in list(partitions):
            self.spans.pop((group, tp), None)
            for key in [key for key in self.counts if key[:2] == (group, tp)]:
                del self.counts[key]

    def attempts(self, group: str, partition: TopicPartition, offset: int) -> int | None:
        return self.counts.get((group, partition, offset))

    def set_attempts(self, group: str, partition: TopicPartition, offset: int, count: int) -> None:
        self.counts[(group, partition, offset)] = count

    def forget_attempts(self, group: str, partition: TopicPartition, offset: int) -> None:
        self.counts.pop((group, partition, offset), None)

    def close(self) -> None:
        pass


class CrashGuard:
    """The consumer loop's side of the log: one mark per batch, and care after a crash."""

    def __init__(self, log: DeliveryLog, *, group: str, max_attempts: int) -> None:
        self._log = log
        self._group = group
        self.max_attempts = max(1, max_attempts)
        self._careful: dict[TopicPartition, int] = {}  # partition → last offset of the batch a crash left in flight

    @property
    def careful_partitions(self) -> Iterable[TopicPartition]:
        """Partitions whose crashed batch is still being handled one message at a time."""
        return self._careful.keys()

    def mark(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Before handling a batch: which offsets are in hand, should this process die with them."""
        for partition, records in batches.items():
            if partition in self._careful and records[0].offset > self._careful[partition]:
                del self._careful[partition]  # the batch in flight before the crash was committed after all
        spans = {tp: (batch[0].offset, batch[-1].offset) for tp, batch in batches.items() if tp not in self._careful}
        if spans:
            self._log.mark_in_flight(self._group, spans)

    def careful_until(self, partition: TopicPartition, offset: int) -> int | None:
        """The end of the crashed batch while ``offset`` is inside it; None once past it (care ends)."""
        until = self._careful.get(partition)
        if until is not None and offset > until:
            del self._careful[partition]
            return None
        return until

    def previous_attempts(self, partition: TopicPartition, offset: int) -> int:
        """Attempts so far; the batch that was in flight counts as every message's first."""
        return self._log.attempts(self._group, partition, offset) or 1

    def set_attempts(self, partition: TopicPartition, offset: int, count: int) -> None:
        self._log.set_attempts(self._group, partition, offset, count)

    def finished(self, partition: TopicPartition, offset: int) -> None:
        self._log.forget_attempts(self._group, partition, offset)

    def take_over(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Span]:
        """Partitions come to us: a batch still marked in flight means its consumer died with it in hand."""
        crashed = self._log.in_flight(self._group, partitions)
        self._careful.update({partition: last for partition, (_, last) in crashed.items()})
        return crashed

    def hand_over(self, partitions: Iterable[TopicPartition], *, clean: bool) -> None:
        """Partitions leave us. A clean hand-over releases their marks: no crash happened here. A partition
        still under care keeps its marks and counts, for whoever takes it next on this host."""
        partitions = list(partitions)
        if clean:
            self._log.release(self._group, [tp for tp in partitions if tp not in self._careful])
        for partition in partitions:
            self._careful.pop(partition, None)

    def close(self) -> None:
        self._log.close()
