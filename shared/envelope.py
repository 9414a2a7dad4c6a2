"""CloudEvents 1.0 binary content mode on Kafka, with W3C trace context.

The attributes travel as ``ce_*`` headers (``cloudevents.kafka`` does that mapping), the value is
the event's JSON, ``content-type`` is ``application/json`` and the W3C ``traceparent`` header
carries the trace.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary
from opentelemetry import propagate
from pydantic import ValidationError

from shared.events import EVENT_TYPES, Event, new_id, utc_now

CONTENT_TYPE = "application/json"
Headers = list[tuple[str, bytes]]


class DecodeError(ValueError):
    """A message that can never become an event: the reason says why, for the DLQ."""


@dataclass(frozen=True)
class EventMeta:
    """The envelope around an event: what handlers may need besides the event itself."""

    event_id: str
    source: str
    time: datetime
    traceparent: str | None
    type_name: str


@dataclass(frozen=True)
class Decoded:
    event: Event
    meta: EventMeta


@dataclass(frozen=True)
class Encoded:
    key: bytes
    value: bytes
    headers: Headers


def _fresh_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_traceparent() -> str:
    """The active span's traceparent, or a new root when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent") or _fresh_traceparent()


def encode(event: Event, *, source: str, event_id: str | None = None, traceparent: str | None = None) -> Encoded:
    """Event → Kafka key, value and headers (binary content mode)."""
    attributes = {
        "type": event.type_name,
        "source": source,
        "id": event_id or new_id(),
        "time": utc_now().isoformat(),
        "datacontenttype": CONTENT_TYPE,
    }
    cloud_event = CloudEvent(attributes, event.model_dump(mode="json"))
    message = to_binary(cloud_event, data_marshaller=lambda data: json.dumps(data).encode())
    headers: Headers = list(message.headers.items())
    headers.append(("traceparent", (traceparent or current_traceparent()).encode()))
    value = message.value if isinstance(message.value, bytes) else message.value.encode()
    return Encoded(key=event.partition_key().encode(), value=value, headers=headers)


def _header_dict(headers: Headers | None) -> dict[str, bytes]:
    return {name: value for name, value in headers or [] if value is not None}


def decode(headers: Headers | None, key: bytes | None, value: bytes | None) -> Decoded:
    """Kafka message → typed event and its envelope; raises DecodeError with the reason."""
    found = _header_dict(headers)
    missing = [name for name in ("ce_specversion", "ce_id", "ce_type", "ce_source") if name not in found]
    if missing:
        raise DecodeError(f"not a CloudEvents binary-mode message: missing headers {', '.join(missing)}")
    if value is None:
        raise DecodeError("message has no value")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as error:
        raise DecodeError(f"value is not valid JSON: {error}") from error
    try:
        message = KafkaMessage(headers=found, key=key, value=value)
        cloud_event = from_binary(message, data_unmarshaller=lambda _: data)
    except Exception as error:  # the SDK raises its own error types for bad attributes
        raise DecodeError(f"invalid CloudEvents attributes: {error}") from error
    return Decoded(event=_validate(cloud_event), meta=_meta(cloud_event, found))


def _validate(cloud_event: CloudEvent) -> Event:
    type_name = cloud_event["type"]
    event_class = EVENT_TYPES.get(type_name)
    if event_class is None:
        raise DecodeError(f"unknown event type {type_name!r}")
    try:
        return event_class.model_validate(cloud_event.data)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(root)'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise DecodeError(f"{type_name} failed validation: {details}") from error


def _meta(cloud_event: CloudEvent, headers: dict[str, bytes]) -> EventMeta:
    time_text = cloud_event.get("time")
    try:
        time = datetime.fromisoformat(time_text) if time_text else utc_now()
    except ValueError as error:
        raise DecodeError(f"ce_time is not an RFC 3339 time: {time_text!r}") from error
    traceparent = headers.get("traceparent")
    return EventMeta(
        event_id=cloud_event["id"],
        source=cloud_event["source"],
        time=time,
        traceparent=traceparent.decode(errors="replace") if traceparent else None,
        type_name=cloud_event["type"],
    )
