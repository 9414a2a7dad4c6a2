"""Event schemas: validation at the edge, immutability, and the registry of types."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.events import EVENT_TYPES, TOPICS, Hyperparameters, ModelDecided, TrainingRequested, json_schemas


def test_type_names_are_versioned_and_unique() -> None:
    assert all(name.startswith("ferry.") and name.rsplit(".", 1)[1].startswith("v") for name in EVENT_TYPES)
    assert set(TOPICS) == {
        "training.requested", "training.status", "model.trained", "model.registered",
        "model.decided", "deployment.changed", "alert",
    }  # fmt: skip


def test_events_are_frozen() -> None:
    request = TrainingRequested(model_name="digits", dataset="sklearn:digits")
    with pytest.raises(ValidationError):
        request.dataset = "sklearn:wine"  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [{"epochs": 0}, {"learning_rate": -1.0}, {"batch_size": 0}, {"weight_decay": 2.0}, {"patience": 0}],
)
def test_invalid_hyperparameters_name_the_field(bad: dict) -> None:
    with pytest.raises(ValidationError) as error:
        Hyperparameters(**bad)
    assert next(iter(bad)) in str(error.value)


def test_decision_needs_a_reason_and_a_known_verdict() -> None:
    with pytest.raises(ValidationError, match="reason"):
        ModelDecided(model_name="m", version=1, decision="promote", reason="")
    with pytest.raises(ValidationError, match="decision"):
        ModelDecided(model_name="m", version=1, decision="maybe", reason="r")  # type: ignore[arg-type]


def test_request_ids_are_generated_when_absent() -> None:
    first = TrainingRequested(model_name="digits", dataset="sklearn:digits")
    second = TrainingRequested(model_name="digits", dataset="sklearn:digits")
    assert first.request_id != second.request_id


def test_json_schemas_cover_every_event() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(EVENT_TYPES)
    assert "model_name" in schemas["ferry.model.trained.v1"]["required"]
