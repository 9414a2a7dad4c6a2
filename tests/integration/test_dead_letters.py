"""Dead letters through the real broker: dead-lettered by the one consumer loop, listed, shown, replayed
with their original identity (applied once however often they are replayed), selected by time, and
dead-lettered again with every reason when the cause was not fixed."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loop_support import STATUS, Loops, drain, encoded, end_offsets, read_all, send_raw, status

from shared import dead_letters
from shared.cli import main
from shared.envelope import EventMeta
from shared.errors import PermanentError
from shared.events import TrainingStatus
from shared.kafka import ConsumerLoop
from shared.settings import FerrySettings
from shared.waiting import wait_for

pytestmark = pytest.mark.integration

TOKEN = secrets.token_urlsafe(24)


class Ledger:
    """A handler whose effect is keyed by the event's identity, as every Ferry handler's is; it refuses
    the request ids in ``broken`` with a PermanentError until the cause is fixed."""

    def __init__(self) -> None:
        self.broken: dict[str, str] = {}
        self.deliveries: list[tuple[str, str]] = []
        self.applied: dict[tuple[str, str], str] = {}

    def handle(self, event: TrainingStatus, meta: EventMeta) -> None:
        self.deliveries.append(meta.identity)
        if event.request_id in self.broken:
            raise PermanentError(self.broken[event.request_id])
        self.applied.setdefault(meta.identity, event.request_id)


@pytest.fixture
def loops(ferry_settings: FerrySettings) -> Iterator[Loops]:
    built = Loops(ferry_settings)
    yield built
    built.close()


@pytest.fixture
def operator_env(ferry_settings: FerrySettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ferry` run in this test sees the test's broker and topics, and alice's token in a tokens file."""
    tokens = tmp_path / "api-tokens"
    tokens.write_text(f"alice {TOKEN}\n")
    monkeypatch.setenv("FERRY_KAFKA_BOOTSTRAP", ferry_settings.kafka_bootstrap)
    monkeypatch.setenv("FERRY_TOPIC_PREFIX", ferry_settings.topic_prefix)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FERRY_REGISTRY_TOKENS_FILE", str(tokens))
    monkeypatch.setenv("FERRY_API_TOKEN", TOKEN)


def dead_letter(loop: ConsumerLoop, ledger: Ledger, settings: FerrySettings, request_id: str) -> str:
    """Send a status the ledger refuses, and wait until it is dead-lettered; returns its ce_id."""
    key, value, headers = encoded(status(1, key=request_id))
    send_raw(settings, settings.topic(STATUS), [(key, value, headers)])
    event_id = dict(headers)["ce_id"].decode()
    before = len(dead_letters.read(settings, settings.topic(STATUS)))
    drain(loop, lambda: (ferry_source(), event_id) in ledger.deliveries)
    wait_for(
        lambda: len(dead_letters.read(settings, settings.topic(STATUS))) > before, what="the dead letter", timeout_s=30
    )
    return event_id


def ferry_source() -> str:
    return "ferry/test"  # what loop_support's encoded() sends as ce_source


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else []


def test_a_dead_letter_is_listed_shown_and_replayed_once_its_cause_is_fixed(
    loops: Loops, ferry_settings: FerrySettings, operator_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger()
    ledger.broken["r1"] = "artifact a1b2 is not in the store yet"
    loop = loops.make({TrainingStatus: [ledger.handle]}, group="dlq-ops")
    event_id = dead_letter(loop, ledger, ferry_settings, "r1")
    identity = (ferry_source(), event_id)

    code, listed = run_json(capsys, "dlq", "list", "training.status", "--json")
    assert code == 0
    [entry] = listed
    assert entry["id"] == event_id and entry["key"] == "r1" and entry["error_type"] == "PermanentError"
    assert entry["reason"] == "artifact a1b2 is not in the store yet"
    assert entry["group"] == loops.group("dlq-ops") and entry["original"].startswith(ferry_settings.topic(STATUS))
    code, [shown] = run_json(capsys, "dlq", "show", "training.status", event_id, "--json")
    assert code == 0 and shown["headers"]["ce_id"] == event_id and '"request_id": "r1"' in shown["payload"]
    assert main(["dlq", "show", "training.status", "no-such-id"]) == 3
    assert (
        main(["dlq", "list"]) == 0
        and main(["dlq", "show", "training.status", entry["dlq"].split("/", 1)[1].replace("/", ":")]) == 0
    )
    printed = capsys.readouterr().out
    assert (
        printed.count("PermanentError: artifact a1b2 is not in the store yet") == 1
        and "header ce_id: " + event_id in printed
    )
    assert main(["dlq", "list", "alert"]) == 3  # a topic with no dead letters

    published = end_offsets(ferry_settings, ferry_settings.topic(STATUS))
    assert main(["dlq", "replay", "training.status", "--id", event_id, "--dry-run"]) == 0
    assert f"would replay {entry['dlq']}" in capsys.readouterr().out
    assert end_offsets(ferry_settings, ferry_settings.topic(STATUS)) == published  # a dry run sends nothing

    ledger.broken.clear()  # the cause is fixed
    for replays in (1, 2):  # the second replay finds the event applied: the same identity changes nothing
        assert main(["dlq", "replay", "training.status", "--id", event_id]) == 0
        drain(loop, lambda replays=replays: ledger.deliveries.count(identity) == 1 + replays)
        assert ledger.applied == {identity: "r1"}

    records = [dict(record.headers) for record in read_all(ferry_settings, ferry_settings.topic(STATUS), 3)]
    headers = [found for found in records if "ferry_replay_of" in found]
    assert len(headers) == 2
    assert {h["ce_id"].decode() for h in headers} == {event_id} and {h["ce_source"] for h in headers} == {b"ferry/test"}
    assert all(h["ferry_replayed_by"] == b"alice" and h["ferry_replay_of"].decode() == entry["dlq"] for h in headers)
    assert all(h["ferry_dlq_previous_reason"] == b"artifact a1b2 is not in the store yet" for h in headers)


def test_a_replay_without_a_valid_credential_is_refused_and_sends_nothing(
    loops: Loops,
    ferry_settings: FerrySettings,
    operator_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = Ledger()
    ledger.broken["r1"] = "not yet"
    event_id = dead_letter(
        loops.make({TrainingStatus: [ledger.handle]}, group="dlq-refused"), ledger, ferry_settings, "r1"
    )
    published = end_offsets(ferry_settings, ferry_settings.topic(STATUS))
    for token in (secrets.token_urlsafe(24), None):
        if token:
            monkeypatch.setenv("FERRY_API_TOKEN", token)
        else:
            monkeypatch.delenv("FERRY_API_TOKEN")
        assert main(["dlq", "replay", "training.status", "--id", event_id]) == 1
        assert "replay refused" in capsys.readouterr().err
    assert end_offsets(ferry_settings, ferry_settings.topic(STATUS)) == published


def test_since_selects_the_dead_letters_of_that_time_and_later(
    loops: Loops, ferry_settings: FerrySettings, operator_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger()
    ledger.broken |= {"early": "refused", "late": "refused"}
    loop = loops.make({TrainingStatus: [ledger.handle]}, group="dlq-since")
    dead_letter(loop, ledger, ferry_settings, "early")
    time.sleep(0.05)  # the broker's timestamps are milliseconds: keep the two apart
    between = datetime.now(UTC)
    time.sleep(0.05)
    late_id = dead_letter(loop, ledger, ferry_settings, "late")

    code, listed = run_json(capsys, "dlq", "list", "training.status", "--since", between.isoformat(), "--json")
    assert code == 0 and [entry["id"] for entry in listed] == [late_id]
    assert main(["dlq", "replay", "training.status", "--since", between.isoformat(), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert late_id in out and out.count("would replay") == 1
    assert main(["dlq", "replay", "training.status", "--since", datetime.now(UTC).isoformat()]) == 3
    assert main(["dlq", "replay", "training.status", "--since", "yesterday"]) == 2


def test_a_replay_that_fails_again_is_dead_lettered_with_both_reasons(
    loops: Loops, ferry_settings: FerrySettings, operator_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger()
    ledger.broken["r1"] = "first reason"
    loop = loops.make({TrainingStatus: [ledger.handle]}, group="dlq-again")
    event_id = dead_letter(loop, ledger, ferry_settings, "r1")
    ledger.broken["r1"] = "second reason"  # a fix that did not fix it

    assert main(["dlq", "replay", "training.status", "--id", event_id]) == 0
    assert "as alice" in capsys.readouterr().out
    drain(loop, lambda: len(ledger.deliveries) == 2)
    wait_for(
        lambda: len(dead_letters.read(ferry_settings, ferry_settings.topic(STATUS))) == 2,
        what="the second",
        timeout_s=30,
    )

    code, shown = run_json(capsys, "dlq", "show", "training.status", event_id, "--json")
    assert code == 0 and [entry["reason"] for entry in shown] == ["first reason", "second reason"]
    assert shown[1]["previous_reasons"] == ["first reason"] and shown[1]["replayed_by"] == "alice"
    assert shown[1]["headers"]["ferry_dlq_offset"] != shown[0]["headers"]["ferry_dlq_offset"]
    assert ledger.applied == {}
