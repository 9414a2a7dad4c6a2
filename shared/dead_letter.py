"""Dead-letter copies: the original message plus ``ferry_dlq_*`` headers, sent until the broker has it.

A copy is never given up on: a failed send is retried with back-off for as long as the loop runs (the
message's offset stays uncommitted meanwhile). A copy the broker refuses as too large is cut down in
steps, value first, then the original headers and key, with ``ferry_dlq_truncated`` naming what was
cut and ``ferry_dlq_original_bytes`` the value's size; the ``ferry_dlq_*`` headers themselves (reason,
coordinates) always travel whole. A record that could not even be read (corrupt at ``poll()``) is
dead-lettered as its coordinates alone (an empty value), with ``ferry_dlq_unreadable: true``.

A message that was dead-lettered before (a replay, or a copy put back by hand) keeps its history: the
reasons it was refused earlier travel as ``ferry_dlq_previous_reason`` headers, oldest first, and the
stale ``ferry_dlq_*`` headers it arrived with are not copied, so each header of a copy means one thing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

DLQ_HEADER_PREFIX = "ferry_dlq_"
PREVIOUS_REASON = "ferry_dlq_previous_reason"
MAX_PREVIOUS_REASONS = 10
"""A message refused more often than this keeps its latest earlier reasons, not all of them."""
MAX_REASON_CHARS = 16_000
"""A reason longer than this (a handler's exception quoting a whole SQL statement) keeps its head and says so."""
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_HEADROOM = 16 * 1024  # batch and record framing, and the dlq headers, stay under the request limit
_MAX_KEY_BYTES = 1024


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a topic."""
    return f"{topic}.dlq"


class DeadLetterAborted(Exception):
    """The loop was told to stop while a dead-letter copy was still unsent: leave the offset uncommitted."""


@dataclass(frozen=True)
class Original:
    """What is known of the refused message: its coordinates, and its bytes when they could be read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: Headers | None = None
    readable: bool = True

    @classmethod
    def of(cls, record: Any) -> Original:
        headers = [(name, value if value is not None else b"") for name, value in record.headers or []]
        return cls(record.topic, record.partition, record.offset, record.key, record.value, headers)


def bounded_reason(reason: str) -> str:
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return f"{reason[:MAX_REASON_CHARS]} … ({len(reason) - MAX_REASON_CHARS} more characters)"


def previous_reasons(headers: Headers | None) -> list[bytes]:
    """The reasons a message carrying these headers was refused before, oldest first: its own
    ``ferry_dlq_previous_reason`` headers, then its ``ferry_dlq_reason`` (a dead-letter copy's headers)."""
    earlier = [value for name, value in headers or [] if name == PREVIOUS_REASON]
    earlier += [value for name, value in headers or [] if name == "ferry_dlq_reason"]
    return [reason[:MAX_REASON_CHARS] for reason in earlier[-MAX_PREVIOUS_REASONS:]]


def without_dlq_headers(headers: Headers | None) -> Headers:
    """The headers that are not the dead-letter machinery's own."""
    return [(name, value) for name, value in headers or [] if not name.startswith(DLQ_HEADER_PREFIX)]


class DeadLetterWriter:
    """Sends dead-letter copies with the group's name on them; see the module's docstring."""

    def __init__(
        self,
        producer: KafkaProducer,
        *,
        group: str,
        stop: threading.Event,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        ack_timeout_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._group = group
        self._stop = stop
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._ack_timeout_s = ack_timeout_s
        config = getattr(producer, "config", None)
        self._max_request = int(config["max_request_size"]) if isinstance(config, dict) else 1_048_576

    def send(self, original: Original, *, reason: str, error_type: str) -> None:
        """Send the copy and wait for its ack; retries until it is acked or the loop stops.

        A failure that may pass (the broker away, a timeout) is retried with back-off. One that says the
        copy itself is refused (too large, or any other non-retriable error) moves on to a smaller copy;
        should even the last one be refused that way, the error is raised: a bug, not an outage.
        """
        own = self._headers(original, reason=reason, error_type=error_type)
        delay = self._first_backoff_s
        copies = self._copies(original, own)
        key, value, headers = next(copies)
        future: Any = None
        while True:
            try:
                if future is None:
                    future = self._producer.send(dlq_topic(original.topic), key=key, value=value, headers=headers)
                future.get(timeout=self._ack_timeout_s)
                return
            except Exception as error:  # noqa: BLE001 - sorted below: the broker may be away for any length of time
                failure: Exception = error
            if future is not None and not future.is_done:
                # Not acknowledged yet, but still in the producer's hands: it goes on retrying that very record,
                # which its idempotence writes once. A second send now could be written as well, a duplicate.
                if self._stop.is_set():
                    raise DeadLetterAborted(f"stopped before the dead-letter copy of {_at(original)} was acked")
                log.warning("dead-letter copy of %s not acknowledged yet; still waiting for it", _at(original))
                continue
            future = None  # failed for good: the next attempt is a new send
            if not _may_pass(failure):
                smaller = next(copies, None)
                if smaller is None:
                    raise failure
                log.warning("dead-letter copy of %s refused (%s); sending a smaller one", _at(original), failure)
                key, value, headers = smaller
                continue
            if self._stop.is_set():
                raise DeadLetterAborted(f"stopped before the dead-letter copy of {_at(original)} was sent") from failure
            log.warning("dead-letter send for %s failed, retrying in %.1fs: %s", _at(original), delay, failure)
            self._stop.wait(delay)
            delay = min(delay * 2, self._max_backoff_s)

    def _headers(self, original: Original, *, reason: str, error_type: str) -> Headers:
        headers = [
            ("ferry_dlq_reason", bounded_reason(reason).encode(errors="replace")),
            ("ferry_dlq_error_type", error_type.encode()),
            ("ferry_dlq_topic", original.topic.encode()),
            ("ferry_dlq_partition", str(original.partition).encode()),
            ("ferry_dlq_offset", str(original.offset).encode()),
            ("ferry_dlq_group", self._group.encode()),
            ("ferry_dlq_time", f"{time.time():.3f}".encode()),
        ]
        headers += [(PREVIOUS_REASON, earlier) for earlier in previous_reasons(original.headers)]
        if not original.readable:
            headers.append(("ferry_dlq_unreadable", b"true"))
        return headers

    def _copies(self, original: Original, own: Headers) -> Iterator[tuple[bytes | None, bytes | None, Headers]]:
        """The whole copy first, then ever smaller ones; the last keeps the coordinates and reason alone."""
        key, value, theirs = original.key, original.value, without_dlq_headers(original.headers)
        if key is None and value is None:
            value = b""  # a record needs one of them
        yield key, value, theirs + own
        value = value or b""
        size = len(value)
        budget = max(0, self._max_request - _HEADROOM - len(key or b"") - sum(len(n) + len(v) for n, v in theirs))
        while budget >= 1024:
            if budget < size:
                yield key, value[:budget], theirs + own + _truncated("value", size)
            budget //= 4
        short_key = key[:_MAX_KEY_BYTES] if key is not None else None
        yield short_key, value[:1024], own + _truncated("value,headers,key", size)


def _may_pass(error: Exception) -> bool:
    """A failure worth retrying as is: the broker away or slow, not the copy refused."""
    if isinstance(error, TOO_LARGE):
        return False
    if isinstance(error, KafkaError):
        return bool(error.retriable)
    return isinstance(error, OSError | TimeoutError)


def _truncated(parts: str, size: int) -> Headers:
    return [("ferry_dlq_truncated", parts.encode()), ("ferry_dlq_original_bytes", str(size).encode())]


def _at(original: Original) -> str:
    return f"{original.topic}[{original.partition}]@{original.offset}"
