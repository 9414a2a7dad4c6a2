"""CloudEvents binary-mode envelope: round trips and refusals."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.envelope import DecodeError, decode, encode
from shared.events import Compression, Hyperparameters, TrainingRequested, TrainingStatus

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", fullmatch=True)
no_nul = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))  # encode refuses NUL
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)

statuses = st.builds(
    TrainingStatus,
    model_name=names,
    request_id=st.text(no_nul, min_size=1, max_size=40),
    state=st.sampled_from(["started", "progress", "completed", "failed"]),
    epoch=st.none() | st.integers(0, 10_000),
    train_loss=st.none() | finite,
    reason=st.none() | st.text(no_nul, max_size=200),
)
requests = st.builds(
    TrainingRequested,
    model_name=names,
    dataset=st.sampled_from(["sklearn:digits", "sklearn:wine", "csv:/tmp/data.csv"]),
    arch=st.sampled_from(["mlp", "cnn"]),
    hyperparameters=st.builds(
        Hyperparameters,
        epochs=st.integers(1, 500),
        learning_rate=st.floats(1e-6, 1.0),
        hidden_sizes=st.lists(st.integers(1, 1024), max_size=4),
    ),
    compression=st.builds(Compression, quantize=st.none() | st.just("int8")),
)


@settings(max_examples=150, deadline=None)
@given(event=statuses | requests, event_id=st.uuids().map(str))
def test_every_event_survives_a_round_trip(event, event_id) -> None:
    message = encode(event, source="ferry/test", event_id=event_id)
    decoded = decode(message.headers, message.key, message.value)
    assert decoded.event == event
    assert type(decoded.event) is type(event)
    assert decoded.meta.event_id == event_id
    assert decoded.meta.source == "ferry/test"
    assert message.key == event.partition_key().encode()


def test_headers_follow_cloudevents_binary_mode_with_trace_context() -> None:
    event = TrainingStatus(model_name="digits", request_id="r1", state="started")
    message = encode(event, source="ferry/trainer")
    headers = dict(message.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"ferry.training.status.v1"
    assert headers["ce_source"] == b"ferry/trainer"
    assert headers["content-type"] == b"application/json"
    version, trace_id, span_id, flags = headers["traceparent"].decode().split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    assert json.loads(message.value)["request_id"] == "r1"


def _message(**overrides):
    message = encode(TrainingStatus(model_name="m", request_id="r", state="started"), source="t")
    headers = dict(message.headers)
    value = overrides.pop("value", message.value)
    headers.update(overrides)
    return [(name, data) for name, data in headers.items() if data is not None], message.key, value


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ce_type": None}, "missing headers ce_type"),
        ({"ce_type": b"ferry.unknown.v9"}, "unknown event type 'ferry.unknown.v9'"),
        ({"value": b"{not json"}, "not valid JSON"),
        ({"value": json.dumps({"model_name": "m"}).encode()}, "request_id: Field required"),
        ({"value": json.dumps({"model_name": "m", "request_id": "r", "state": "exploded"}).encode()}, "state"),
        (
            {"value": json.dumps({"model_name": "bad name!", "request_id": "r", "state": "started"}).encode()},
            "model_name",
        ),
        ({"value": None}, "no value"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(overrides, reason) -> None:
    headers, key, value = _message(**overrides)
    with pytest.raises(DecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(headers, key, value)


def test_unknown_fields_are_refused_not_ignored() -> None:
    payload = {"model_name": "m", "request_id": "r", "state": "started", "surprise": 1}
    headers, key, value = _message(value=json.dumps(payload).encode())
    with pytest.raises(DecodeError, match="surprise: Extra inputs are not permitted"):
        decode(headers, key, value)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ce_id": b""}, "ce_id is empty"),
        ({"ce_id": b"  "}, "ce_id is empty"),
        ({"ce_source": b""}, "ce_source is empty"),
        ({"ce_specversion": b"0.3"}, "ce_specversion must be '1.0' (CloudEvents 1.0), got '0.3'"),
        ({"ce_specversion": b"1.0.1"}, "ce_specversion must be '1.0'"),
        ({"content-type": b"text/plain"}, "content-type must be application/json, got 'text/plain'"),
        ({"ce_id": b"\xff\xfe"}, "header ce_id is not UTF-8"),
        ({"ce_time": b"yesterday"}, "ce_time is not an RFC 3339 time"),
        ({"value": b'{"model_name": "m", "request_id": "r\\u0000", "state": "started"}'}, "NUL character"),
    ],
)
def test_cloudevents_1_0_is_held_to(overrides, reason) -> None:
    headers, key, value = _message(**overrides)
    with pytest.raises(DecodeError, match=reason.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        decode(headers, key, value)


def test_a_content_type_with_parameters_is_json_all_the_same() -> None:
    headers, key, value = _message(**{"content-type": b"application/json; charset=utf-8"})
    assert decode(headers, key, value).event.model_name == "m"


def test_an_event_is_identified_by_its_source_and_id() -> None:
    first = decode(*_message(ce_id=b"same", ce_source=b"ferry/a"))
    second = decode(*_message(ce_id=b"same", ce_source=b"ferry/b"))
    assert first.meta.identity == ("ferry/a", "same")
    assert first.meta.identity != second.meta.identity


def test_a_long_list_of_problems_is_summarised_not_dumped() -> None:
    payload = {"model_name": "m", "request_id": "r", "state": "started"} | {f"extra{n}": n for n in range(50)}
    headers, key, value = _message(value=json.dumps(payload).encode())
    with pytest.raises(DecodeError) as error:
        decode(headers, key, value)
    assert "extra0: Extra inputs are not permitted" in str(error.value)
    assert str(error.value).endswith("and 40 more problems")


def test_an_event_holding_a_nul_character_is_refused_when_encoded_too() -> None:
    with pytest.raises(ValueError, match="NUL character"):
        encode(TrainingStatus(model_name="m", request_id="r", state="failed", reason="bad\x00byte"), source="t")
