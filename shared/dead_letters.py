"""Dead letters an operator can read and put back: list, show, replay.

Reading assigns the DLQ's partitions and seeks (to the start, or by time with Kafka's offsets-for-times);
it joins no group and commits nothing, and stops at the end offsets it saw when it began, within a
deadline. A replay sends the original key, value and headers back to the ORIGINAL topic: the same
``ce_id`` and ``ce_source``, so a consumer that applied the event already changes nothing. It adds
``ferry_replay_of`` (the DLQ coordinates), ``ferry_replayed_by``, ``ferry_replayed_by_credential`` and
``ferry_replayed_at``, and carries the reasons it was refused as ``ferry_dlq_previous_reason``: a replay
that fails again is dead-lettered with every reason (see shared/dead_letter.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from shared.dead_letter import Headers, dlq_topic, previous_reasons, without_dlq_headers
from shared.events import TOPICS
from shared.kafka import offsets_since, read_up_to
from shared.settings import FerrySettings

REPLAY_HEADER_PREFIX = "ferry_replay"
DEFAULT_PAYLOAD_CHARS = 2000


class DeadLetterError(Exception):
    """A dead-letter request that cannot be done; the message says why."""


class UnknownTopic(DeadLetterError):
    """The topic named is not one of Ferry's design topics."""


@dataclass(frozen=True)
class Operator:
    """Who replays, and which credential says so (``tokens-file``, ``FERRY_API_TOKEN`` or ``os-user``)."""

    user: str
    credential: str


@dataclass(frozen=True)
class DeadLetter:
    """One record of a ``<topic>.dlq``: the original message and the ``ferry_dlq_*`` headers saying why."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        found = [value for header, value in self.headers if header == name]
        return found[-1].decode(errors="replace") if found else None

    @property
    def event_id(self) -> str | None:
        return self.header("ce_id")

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def dead_lettered_at(self) -> datetime:
        stamp = self.header("ferry_dlq_time")
        try:
            return datetime.fromtimestamp(float(stamp) if stamp else self.timestamp_ms / 1000, UTC)
        except (ValueError, OverflowError, OSError):  # a header that is no time: the broker's timestamp
            return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def replayable(self) -> str | None:
        """None when the original bytes are whole; else why this copy cannot be replayed."""
        if self.header("ferry_dlq_unreadable"):
            return "the original could not be read: the copy holds its coordinates alone"
        if self.header("ferry_dlq_truncated"):
            return f"the copy was cut to fit the broker ({self.header('ferry_dlq_truncated')} cut)"
        if not self.event_id:
            return "the original has no ce_id"
        return None

    def matches(self, ident: str) -> bool:
        """``ident`` is the original ``ce_id``, or this record's DLQ ``PARTITION:OFFSET`` or bare offset."""
        if ident == self.event_id:
            return True
        partition, _, offset = ident.rpartition(":")
        if not offset.isdigit() or int(offset) != self.offset:
            return False
        return not partition or (partition.isdigit() and int(partition) == self.partition)

    def summary(self, payload_chars: int = DEFAULT_PAYLOAD_CHARS) -> dict[str, Any]:
        """What list and show print: every value a string fit for a terminal, the payload capped."""
        return {
            "dlq": self.coordinates,
            "id": printable(self.event_id or ""),
            "type": printable(self.header("ce_type") or ""),
            "source": printable(self.header("ce_source") or ""),
            "reason": printable(self.header("ferry_dlq_reason") or ""),
            "previous_reasons": [printable(r.decode(errors="replace")) for r in previous_reasons(self.headers)[:-1]],
            "error_type": printable(self.header("ferry_dlq_error_type") or ""),
            "group": printable(self.header("ferry_dlq_group") or ""),
            "dead_lettered_at": self.dead_lettered_at.isoformat(),
            "original": printable(
                f"{self.header('ferry_dlq_topic')}/{self.header('ferry_dlq_partition')}/{self.header('ferry_dlq_offset')}"
            ),
            "key": printable((self.key or b"").decode(errors="backslashreplace")),
            "replayed_by": printable(self.header("ferry_replayed_by") or ""),
            "not_replayable": self.replayable or "",
            "payload_bytes": len(self.value or b""),
            "payload": payload(self.value, payload_chars),
        }


def printable(text: str) -> str:
    """Control and other unprintable characters escaped: a dead letter cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def payload(value: bytes | None, chars: int = DEFAULT_PAYLOAD_CHARS) -> str:
    """The payload for display: undecodable bytes and control characters escaped, cut at ``chars``."""
    text = printable((value or b"").decode(errors="backslashreplace"))
    return text if len(text) <= chars else f"{text[:chars]}… ({len(text) - chars} more characters)"


def topic_of(settings: FerrySettings, name: str) -> str:
    """The full name of a design topic given short (``model.trained``), full, or as its DLQ."""
    short = name.removesuffix(".dlq").removeprefix(settings.topic_prefix)
    if short not in TOPICS:
        raise UnknownTopic(f"{name!r} is not a Ferry topic; one of: {', '.join(sorted(TOPICS))}")
    return settings.topic(short)


def read(
    settings: FerrySettings, topic: str, *, since: datetime | None = None, timeout_s: float = 30.0
) -> list[DeadLetter]:
    """Every dead letter of ``topic`` (full name), or those dead-lettered at ``since`` or later.

    Reads up to the end offsets seen at the start; DeadLetterError when that takes longer than ``timeout_s``.
    """
    name = dlq_topic(topic)
    consumer = KafkaConsumer(**settings.kafka_client_options(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = {tp: int(offset) for tp, offset in consumer.end_offsets(partitions).items()}
        if since is None:
            consumer.seek_to_beginning(*partitions)
        else:
            for tp, offset in offsets_since(consumer, name, int(since.timestamp() * 1000)).items():
                consumer.seek(tp, offset)
        return _read_until(consumer, ends, time.monotonic() + timeout_s, name)
    finally:
        consumer.close(autocommit=False)


def _read_until(
    consumer: KafkaConsumer, ends: dict[TopicPartition, int], deadline: float, name: str
) -> list[DeadLetter]:
    records, complete = read_up_to(consumer, ends, deadline=deadline)
    if not complete:
        raise DeadLetterError(f"reading {name} did not reach its end in time (read {len(records)})")
    letters = [_letter(record) for record in records]
    return sorted(letters, key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))


def _letter(record: Any) -> DeadLetter:
    headers = [(name, value if value is not None else b"") for name, value in record.headers or []]
    return DeadLetter(
        record.topic, record.partition, record.offset, record.timestamp, record.key, record.value, headers
    )


def select(letters: Sequence[DeadLetter], ident: str | None) -> list[DeadLetter]:
    """Those ``ident`` names (all without one), the latest copy of each event only: a replay sends it once."""
    chosen = [letter for letter in letters if ident is None or letter.matches(ident)]
    latest: dict[tuple[str | None, str], DeadLetter] = {}
    for letter in chosen:
        identity = (letter.header("ce_source"), letter.event_id or letter.coordinates)
        latest[identity] = letter  # letters come in time order: the last one wins
    return list(latest.values())


def replay_headers(letter: DeadLetter, operator: Operator, *, now: datetime | None = None) -> Headers:
    """The original headers (the same ce_id and ce_source), the earlier reasons, and who replayed it when."""
    original = [(n, v) for n, v in without_dlq_headers(letter.headers) if not n.startswith(REPLAY_HEADER_PREFIX)]
    return [
        *original,
        *[("ferry_dlq_previous_reason", reason) for reason in previous_reasons(letter.headers)],
        ("ferry_replay_of", letter.coordinates.encode()),
        ("ferry_replayed_by", operator.user.encode()),
        ("ferry_replayed_by_credential", operator.credential.encode()),
        ("ferry_replayed_at", (now or datetime.now(UTC)).isoformat().encode()),
    ]


def replay(producer: KafkaProducer, topic: str, letters: Sequence[DeadLetter], operator: Operator) -> list[DeadLetter]:
    """Send each letter back to ``topic`` (the original's full name) and wait for the acks; returns them.

    The target is the topic the DLQ belongs to, never what a header names; a copy that does not hold
    the whole original is refused before anything is sent.
    """
    refused = [f"{letter.coordinates}: {letter.replayable}" for letter in letters if letter.replayable]
    if refused:
        raise DeadLetterError("cannot replay " + "; ".join(refused))
    futures = [
        producer.send(topic, key=letter.key, value=letter.value, headers=replay_headers(letter, operator))
        for letter in letters
    ]
    for future in futures:
        future.get(timeout=30)
    producer.flush(timeout=30)
    return list(letters)
