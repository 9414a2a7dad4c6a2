"""Which version answered request X: the logged record of a request, and the feedback given for it.

Only sampled requests are logged (``FERRY_GATEWAY_LOG_SAMPLE``). The search reads ``inference.logged`` from
``since`` on, found with Kafka's offsets-for-times (never a scan from the start), up to the end offsets read
before it began; then ``inference.feedback`` from the answer's time on. A record is decoded only when its
bytes hold the request id. What the topics hold is bounded by their retention (the broker's
``log.retention.hours``, 7 days unless set): older requests are not found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer

from shared.envelope import DecodeError, decode
from shared.events import FeedbackItem, InferenceFeedback, InferenceLogged
from shared.kafka import offsets_since
from shared.settings import FerrySettings


@dataclass(frozen=True)
class GivenFeedback:
    """One ground truth given for the request: the item, who gave it and when."""

    item: FeedbackItem
    actor: str
    at: datetime


@dataclass(frozen=True)
class RequestTrace:
    """The logged answer of a request, and its feedback (oldest first)."""

    logged: InferenceLogged
    feedback: list[GivenFeedback] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """What ``ferry trace --json`` and ``GET /api/v1/requests/{id}`` answer."""
        logged = self.logged
        return {
            "request_id": logged.request_id,
            "model": logged.model_name,
            "version": logged.version,
            "route": logged.route,
            "revision": logged.revision,
            "at": logged.at.isoformat(),
            "gateway": logged.gateway,
            "feedback": [
                {"label": given.item.label, "value": given.item.value, "actor": given.actor, "at": given.at.isoformat()}
                for given in self.feedback
            ],
        }


def find_request(
    settings: FerrySettings, request_id: str, *, since_s: float = 3600.0, timeout_s: float = 30.0
) -> RequestTrace | None:
    """The request's logged record within the last ``since_s`` seconds and its feedback; None when not logged."""
    consumer = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False, client_id="ferry-trace")
    deadline = time.monotonic() + timeout_s
    try:
        needle = request_id.encode()
        since_ms = int((time.time() - since_s) * 1000)
        logged = [
            event
            for event in read_since(consumer, settings.topic(InferenceLogged.topic), since_ms, needle, deadline)
            if isinstance(event, InferenceLogged) and event.request_id == request_id
        ]
        if not logged:
            return None
        answer = logged[-1]  # a request id given twice: its latest answer
        start_ms = int(answer.at.timestamp() * 1000) - 60_000  # feedback follows; a minute for clock skew
        given = [
            GivenFeedback(item, event.actor, event.at)
            for event in read_since(consumer, settings.topic(InferenceFeedback.topic), start_ms, needle, deadline)
            if isinstance(event, InferenceFeedback) and event.model_name == answer.model_name
            for item in event.items
            if item.request_id == request_id
        ]
        return RequestTrace(answer, given)
    finally:
        consumer.close()


def read_since(consumer: KafkaConsumer, topic: str, since_ms: int, needle: bytes, deadline: float) -> list[Any]:
    """The events of ``topic`` from ``since_ms`` (offsets-for-times) to its end now whose bytes hold ``needle``,
    decoded; also what ``shared/window_reader.py`` reads a production window with."""
    starts = offsets_since(consumer, topic, since_ms)
    if not starts:
        return []
    ends = consumer.end_offsets(list(starts))
    wanted = {tp: offset for tp, offset in starts.items() if offset < ends[tp]}
    if not wanted:
        return []
    consumer.assign(list(wanted))
    for tp, offset in wanted.items():
        consumer.seek(tp, offset)
    found: list[Any] = []
    while any(consumer.position(tp) < ends[tp] for tp in wanted):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} not read to its end in time")
        for tp, records in consumer.poll(timeout_ms=300).items():
            for record in records:
                if record.offset < ends[tp] and record.value is not None and needle in record.value:
                    try:
                        found.append(decode(record.headers, record.key, record.value).event)
                    except DecodeError:
                        continue  # not an event: the consumers dead-letter it; a trace skips it
    return found
