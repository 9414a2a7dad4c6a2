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
from typing import Any, NamedTuple

from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary
from opentelemetry import propagate
from pydantic import ValidationError

from shared.events import EVENT_TYPES, Event, new_id, utc_now

CONTENT_TYPE = "application/json"
Headers = list[tuple[str, bytes]]


class DecodeError(ValueError):
    """A message that can never become an event: the reason says why, for the DLQ."""


class EventMeta(NamedTuple):
    """The envelope around an event: what handlers may need besides the event itself.

    Immutable (a named tuple: built once per message, it costs a third of a frozen dataclass).
    """

    event_id: str
    source: str
    time: datetime
    traceparent: str | None
    type_name: str

    @property
    def identity(self) -> tuple[str, str]:
        """What identifies an event in CloudEvents: (source, id). Key idempotency by this, not the id alone."""
        return (self.source, self.event_id)


class Decoded(NamedTuple):
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
    if _NUL in value and _has_nul(json.loads(value)):  # refused here as every consumer would refuse it
        raise ValueError(f"{event.type_name}: a string holds a NUL character (\\u0000), which no Ferry event may")
    return Encoded(key=event.partition_key().encode(), value=value, headers=headers)


REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_source")
SPEC_VERSION = b"1.0"
MAX_REASON_PROBLEMS = 10
_JSON = CONTENT_TYPE.encode()
_NUL = b"\\u0000"  # how JSON spells U+0000; PostgreSQL text and jsonb refuse it
_TYPES: dict[bytes, type[Event]] = {name.encode(): cls for name, cls in EVENT_TYPES.items()}


def decode(headers: Headers | None, key: bytes | None, value: bytes | None) -> Decoded:
    """Kafka message → typed event and its envelope; raises DecodeError with the reason.

    The attributes are read straight from the headers (the SDK's generic path costs more than the
    rest of the loop) and held to CloudEvents 1.0: specversion exactly ``1.0``, non-empty ``id`` and
    ``source``; the value is parsed and validated in one pass by pydantic.
    """
    found = {name: data for name, data in headers or () if data is not None}
    try:
        specversion, raw_id, raw_type, raw_source = (
            found["ce_specversion"],
            found["ce_id"],
            found["ce_type"],
            found["ce_source"],
        )
    except KeyError:
        missing = ", ".join(name for name in REQUIRED_HEADERS if name not in found)
        raise DecodeError(f"not a CloudEvents binary-mode message: missing headers {missing}") from None
    if specversion != SPEC_VERSION:
        shown = specversion[:20].decode(errors="replace")
        raise DecodeError(f"ce_specversion must be '1.0' (CloudEvents 1.0), got {shown!r}")
    if not raw_id.strip():
        raise DecodeError("ce_id is empty: an event is identified by (ce_source, ce_id) and the id must not be empty")
    if not raw_source.strip():
        raise DecodeError("ce_source is empty: an event is identified by (ce_source, ce_id)")
    content_type = found.get("content-type")
    if content_type is not None and content_type != _JSON and content_type.split(b";")[0].strip().lower() != _JSON:
        raise DecodeError(f"content-type must be {CONTENT_TYPE}, got {content_type[:100].decode(errors='replace')!r}")
    event_class = _TYPES.get(raw_type)
    if event_class is None:
        raise DecodeError(f"unknown event type {raw_type[:200].decode(errors='replace')!r}")
    if value is None:
        raise DecodeError("message has no value")
    event = _validate(event_class, value)
    try:
        event_id, source = raw_id.decode(), raw_source.decode()
    except UnicodeDecodeError as error:
        raise DecodeError(f"header {'ce_id' if _not_utf8(raw_id) else 'ce_source'} is not UTF-8") from error
    traceparent = found.get("traceparent")
    time_header = found.get("ce_time")
    meta = EventMeta(
        event_id,
        source,
        _time(time_header) if time_header else utc_now(),
        traceparent.decode(errors="replace") if traceparent is not None else None,
        event_class.type_name,
    )
    return Decoded(event, meta)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return True
    return False


def _validate(event_class: type[Event], value: bytes) -> Event:
    try:
        event = event_class.model_validate_json(value)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        if problems and problems[0]["type"] == "json_invalid":
            raise DecodeError(f"value is not valid JSON: {problems[0]['msg']}") from error
        raise DecodeError(f"{event_class.type_name} failed validation: {_summary(problems)}") from error
    if _NUL in value and _has_nul(json.loads(value)):
        raise DecodeError(f"{event_class.type_name} failed validation: a string holds a NUL character (\\u0000)")
    return event


def _summary(problems: list[Any]) -> str:
    """The first problems, whole, and how many more: a reason stays readable and bounded."""
    shown = [
        f"{'.'.join(str(part) for part in problem['loc']) or '(root)'}: {problem['msg']}"
        for problem in problems[:MAX_REASON_PROBLEMS]
    ]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more problems" if more else "")


def _has_nul(data: Any) -> bool:
    if isinstance(data, str):
        return "\x00" in data
    if isinstance(data, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in data.items())
    if isinstance(data, list):
        return any(_has_nul(item) for item in data)
    return False


def _time(raw: bytes) -> datetime:
    text = raw.decode(errors="replace")
    try:
        return datetime.fromisoformat(text)
    except ValueError as error:
        raise DecodeError(f"ce_time is not an RFC 3339 time: {text[:100]!r}") from error
