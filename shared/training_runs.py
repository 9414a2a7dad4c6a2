"""Training runs as an operator sees them: each request folded with its ``training.status`` events.

A run is keyed by its request id. ``training.requested`` says what was asked (model, dataset,
architecture, who asked); ``training.status`` says how far it got (started, each epoch's losses,
completed with its artifact, or failed with the reason). The two topics interleave freely and either may
be read first, so :class:`RunBoard` accepts them in any order: a status whose request was not seen yet
makes a run whose dataset and architecture are unknown until the request arrives.

:func:`read_runs` builds a board from both topics up to the end offsets it saw when it began, joining no
consumer group and committing nothing (``ferry runs``); the console keeps one live by its own consumer
loop; :func:`follow_runs` reads the history and then keeps going, for ``ferry runs REQUEST_ID``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from shared.envelope import DecodeError, decode
from shared.events import TrainingRequested, TrainingStatus
from shared.kafka import read_up_to
from shared.settings import FerrySettings

RunState = Literal["requested", "started", "progress", "completed", "failed"]
FINISHED: frozenset[str] = frozenset({"completed", "failed"})
TOPIC_NAMES = (TrainingRequested.topic, TrainingStatus.topic)


class RunsUnavailable(Exception):
    """The topics could not be read to their end in time; the message says how far it got."""


@dataclass
class TrainingRun:
    """One training request and the latest of its progress."""

    request_id: str
    updated_at: datetime
    model_name: str | None = None
    dataset: str | None = None
    architecture: str | None = None
    requested_by: str | None = None
    requested_at: datetime | None = None
    epochs_requested: int | None = None
    state: RunState = "requested"
    epoch: int | None = None
    epochs: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    reason: str | None = None
    artifact_sha256: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def progress(self) -> float | None:
        """How far training got, 0 to 1: 1 once completed, None before its first epoch is known."""
        if self.state == "completed":
            return 1.0
        total = self.epochs or self.epochs_requested
        if self.epoch is None or not total:
            return None
        return min(max(self.epoch / total, 0.0), 1.0)

    def summary(self) -> dict[str, Any]:
        """The run as JSON-safe values (times in ISO 8601)."""
        values = asdict(self)
        for name in ("updated_at", "requested_at"):
            stamp = values[name]
            values[name] = stamp.isoformat() if stamp is not None else None
        values["progress"] = self.progress
        return values


@dataclass
class RunBoard:
    """Every run seen, by request id; events are applied in any order, each at most once in effect."""

    _runs: dict[str, TrainingRun] = field(default_factory=dict)

    def apply(self, event: TrainingRequested | TrainingStatus, at: datetime) -> TrainingRun:
        """Fold one event into its run and return the run."""
        run = self._runs.get(event.request_id)
        if run is None:
            run = self._runs[event.request_id] = TrainingRun(request_id=event.request_id, updated_at=at)
        if isinstance(event, TrainingRequested):
            _requested(run, event, at)
        elif not _stale(run, event):
            _status(run, event)
            run.updated_at = max(run.updated_at, at)
        return run

    def get(self, request_id: str) -> TrainingRun | None:
        return self._runs.get(request_id)

    def runs(self, limit: int | None = None) -> list[TrainingRun]:
        """Newest first (by the latest event's time)."""
        ordered = sorted(self._runs.values(), key=lambda run: run.updated_at, reverse=True)
        return ordered[:limit] if limit is not None else ordered

    def in_progress(self) -> list[TrainingRun]:
        return [run for run in self.runs() if not run.finished]

    def failed(self) -> list[TrainingRun]:
        return [run for run in self.runs() if run.state == "failed"]

    def __len__(self) -> int:
        return len(self._runs)


def _requested(run: TrainingRun, event: TrainingRequested, at: datetime) -> None:
    run.model_name = event.model_name
    run.dataset = event.dataset
    run.architecture = str(event.arch)
    run.requested_by = event.requested_by
    run.requested_at = at
    run.epochs_requested = event.hyperparameters.epochs
    run.updated_at = max(run.updated_at, at)


_ORDER: dict[str, int] = {"requested": 0, "started": 1, "progress": 2, "completed": 3, "failed": 3}


def _stale(run: TrainingRun, event: TrainingStatus) -> bool:
    """A status older than what the run shows: redelivered, or read after a later one of another topic's
    partition. Within one run's partition the order holds (the key is the request id)."""
    if _ORDER[event.state] < _ORDER[run.state]:
        return True
    return (
        event.state == run.state == "progress"
        and event.epoch is not None
        and run.epoch is not None
        and event.epoch < run.epoch
    )


def _status(run: TrainingRun, event: TrainingStatus) -> None:
    run.model_name = run.model_name or event.model_name
    run.state = event.state
    for name in ("epoch", "epochs", "train_loss", "val_loss", "val_accuracy", "reason", "artifact_sha256"):
        value = getattr(event, name)
        if value is not None:
            setattr(run, name, value)


def _consumer(settings: FerrySettings) -> tuple[KafkaConsumer, dict[TopicPartition, int]]:
    """A group-less consumer at the start of both topics, and their end offsets now."""
    consumer = KafkaConsumer(**settings.kafka_client_options(), group_id=None, enable_auto_commit=False)
    partitions = [
        TopicPartition(name, partition)
        for name in (settings.topic(topic) for topic in TOPIC_NAMES)
        for partition in sorted(consumer.partitions_for_topic(name) or ())
    ]
    if partitions:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
    ends = {tp: int(offset) for tp, offset in consumer.end_offsets(partitions).items()} if partitions else {}
    return consumer, ends


def _apply_records(board: RunBoard, records: list[Any]) -> list[TrainingRun]:
    """Apply what decodes; what does not is the consumers' to dead-letter, not the reader's."""
    changed = []
    for record in sorted(records, key=lambda record: record.timestamp):
        try:
            event = decode(record.headers, record.key, record.value).event
        except DecodeError:
            continue
        if isinstance(event, TrainingRequested | TrainingStatus):
            changed.append(board.apply(event, datetime.fromtimestamp(record.timestamp / 1000, UTC)))
    return changed


def read_runs(settings: FerrySettings, *, timeout_s: float = 10.0) -> RunBoard:
    """Every run in ``training.requested`` and ``training.status`` up to their end offsets now."""
    consumer, ends = _consumer(settings)
    try:
        records, complete = read_up_to(consumer, ends, deadline=time.monotonic() + timeout_s)
    finally:
        consumer.close(autocommit=False)
    if not complete:
        raise RunsUnavailable(f"reading the training topics did not reach their end in {timeout_s:.0f}s")
    board = RunBoard()
    _apply_records(board, records)
    return board


def follow_runs(
    settings: FerrySettings, *, timeout_s: float = 10.0, stop: Callable[[], bool] = lambda: False
) -> Iterator[tuple[RunBoard, list[TrainingRun]]]:
    """The board read to the end (with every run as changed), then each later batch of changed runs.

    One consumer reads the history and keeps polling from where it ended, so nothing published in
    between is missed. Ends when ``stop`` answers true (checked about every half second).
    """
    consumer, ends = _consumer(settings)
    try:
        records, complete = read_up_to(consumer, ends, deadline=time.monotonic() + timeout_s)
        if not complete:
            raise RunsUnavailable(f"reading the training topics did not reach their end in {timeout_s:.0f}s")
        board = RunBoard()
        _apply_records(board, records)
        yield board, board.runs()
        while not stop():
            batch = [record for records in consumer.poll(timeout_ms=500).values() for record in records]
            changed = _apply_records(board, batch)
            if changed:
                yield board, changed
    finally:
        consumer.close(autocommit=False)
