"""Dead letters for operators, without a broker: display, selection, replay headers, who replays."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.dead_letters import (
    DeadLetter,
    DeadLetterError,
    Operator,
    UnknownTopic,
    payload,
    replay,
    replay_headers,
    select,
    topic_of,
)
from shared.dlq_cli import Refused, operator_of, parse_since
from shared.settings import FerrySettings

SETTINGS = FerrySettings(topic_prefix="p.")
ALICE = Operator("alice", "tokens-file")


def letter(offset: int = 5, event_id: str = "e1", partition: int = 0, **extra: bytes) -> DeadLetter:
    headers = [("ce_id", event_id.encode()), ("ce_source", b"ferry/trainer"), ("traceparent", b"00-t")]
    headers += [
        ("ferry_replayed_by", b"bob"),  # from an earlier replay: replaced, not doubled
        ("ferry_dlq_reason", b"not yet"),
        ("ferry_dlq_offset", b"9"),
        ("ferry_dlq_time", b"1796400000.5"),
    ]
    headers += [(name, value) for name, value in extra.items()]
    return DeadLetter("p.model.trained.dlq", partition, offset, 1796400000500, b"digits", b'{"a": 1}', headers)


def test_a_payload_is_escaped_and_capped_for_the_terminal() -> None:
    assert payload(b"\x1b[31mred\n\xff") == "\\x1b[31mred\\n\\xff"
    assert payload(b"x" * 50, chars=10) == "x" * 10 + "… (40 more characters)"


def test_topics_are_design_topics_given_short_full_or_as_their_dlq() -> None:
    assert topic_of(SETTINGS, "model.trained") == topic_of(SETTINGS, "p.model.trained.dlq") == "p.model.trained"
    with pytest.raises(UnknownTopic):
        topic_of(SETTINGS, "../etc")


def test_a_letter_is_found_by_its_event_id_or_its_dlq_offset() -> None:
    found = letter(offset=5, partition=2)
    assert found.matches("e1") and found.matches("5") and found.matches("2:5")
    assert not found.matches("1:5") and not found.matches("6") and not found.matches("x:5")


def test_select_replays_the_latest_copy_of_each_event_once() -> None:
    first, again, other = letter(offset=1), letter(offset=2), letter(offset=3, event_id="e2")
    assert select([first, again, other], None) == [again, other]
    assert select([first, again, other], "e2") == [other]


def test_replay_headers_keep_the_identity_and_record_the_reasons_and_who() -> None:
    now = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
    headers = replay_headers(letter(), ALICE, now=now)
    names = [name for name, _ in headers]
    assert dict(headers)["ce_id"] == b"e1" and dict(headers)["ce_source"] == b"ferry/trainer"
    assert "ferry_dlq_reason" not in names and "ferry_dlq_offset" not in names
    assert dict(headers)["ferry_dlq_previous_reason"] == b"not yet"
    assert names.count("ferry_replayed_by") == 1 and dict(headers)["ferry_replayed_by"] == b"alice"
    assert dict(headers)["ferry_replay_of"] == b"p.model.trained.dlq/0/5"
    assert dict(headers)["ferry_replayed_at"] == now.isoformat().encode()


@dataclass
class Recorder:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, topic: str, **message: Any) -> Any:
        self.sent.append({"topic": topic, **message})
        return self

    def get(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> None:
        return None


def test_a_cut_or_unreadable_copy_is_never_replayed_and_nothing_is_sent() -> None:
    producer = Recorder()
    cut = letter(offset=6, event_id="e2", ferry_dlq_truncated=b"value")
    with pytest.raises(DeadLetterError, match="cut to fit"):
        replay(producer, "p.model.trained", [letter(), cut], ALICE)  # type: ignore[arg-type]
    assert producer.sent == []
    replay(producer, "p.model.trained", [letter()], ALICE)  # type: ignore[arg-type]
    assert [(sent["topic"], sent["key"], sent["value"]) for sent in producer.sent] == [
        ("p.model.trained", b"digits", b'{"a": 1}')
    ]


def test_since_is_an_iso_time_utc_when_it_names_no_zone() -> None:
    assert parse_since("2026-12-04T21:00:00") == datetime(2026, 12, 4, 21, tzinfo=UTC)
    assert parse_since("2026-12-04T21:00:00Z") == datetime(2026, 12, 4, 21, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO time"):
        parse_since("yesterday")


def test_who_replays(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {token}\n")
    settings = FerrySettings(home=tmp_path / "home")
    with_file = {"FERRY_REGISTRY_TOKENS_FILE": str(tokens)}
    assert operator_of(settings, with_file | {"FERRY_API_TOKEN": token}) == Operator("alice", "tokens-file")
    assert operator_of(settings, {"FERRY_API_TOKEN": token}) == Operator("admin", "FERRY_API_TOKEN")
    assert operator_of(settings, {}).credential == "os-user"
    for refused in (with_file, with_file | {"FERRY_API_TOKEN": secrets.token_urlsafe(24)}, {"FERRY_API_TOKEN": "demo"}):
        with pytest.raises(Refused):
            operator_of(settings, refused)
    with pytest.raises(Refused, match="names no file|cannot be read"):
        operator_of(settings, {"FERRY_REGISTRY_TOKENS_FILE": str(tmp_path / "missing"), "FERRY_API_TOKEN": token})


def test_a_summary_escapes_what_the_headers_say_and_survives_a_bad_time() -> None:
    odd = letter(ferry_dlq_topic=b"t\x1b[2J", ferry_dlq_reason=b"bad\nthing")
    odd = DeadLetter(odd.topic, 0, 1, 1796400000500, None, None, [*odd.headers, ("ferry_dlq_time", b"inf")])
    summary = odd.summary()
    assert "\x1b" not in summary["original"] and summary["reason"] == "bad\\nthing"
    assert summary["dead_lettered_at"].startswith("2026-") and summary["payload"] == ""
