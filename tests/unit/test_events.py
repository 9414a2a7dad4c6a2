"""Event schemas: validation at the edge, immutability, and the registry of types."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.events import (
    EVENT_TYPES,
    TOPICS,
    DeploymentChanged,
    Hyperparameters,
    ModelDecided,
    ModelRegistered,
    ModelTrained,
    TrainingRequested,
    TrainingStatus,
    json_schemas,
)


def test_type_names_are_versioned_and_unique() -> None:
    assert all(name.startswith("ferry.") and name.rsplit(".", 1)[1].startswith("v") for name in EVENT_TYPES)
    assert set(TOPICS) == {
        "training.requested",
        "training.status",
        "model.trained",
        "model.registered",
        "model.decided",
        "deployment.changed",
        "alert",
        "inference.logged",
        "inference.feedback",
    }


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


@pytest.mark.parametrize(
    ("event_class", "fields", "field_name"),
    [
        (ModelTrained, {"artifact": {"size_bytes": 10**20}}, "artifact.size_bytes"),
        (ModelRegistered, {"version": 2**40}, "version"),
        (ModelDecided, {"version": 2**31}, "version"),
        (DeploymentChanged, {"revision": 2**31}, "revision"),
        (TrainingRequested, {"hyperparameters": {"seed": 2**70}}, "hyperparameters.seed"),
        (TrainingRequested, {"hyperparameters": {"epochs": 10**6}}, "hyperparameters.epochs"),
        (TrainingRequested, {"hyperparameters": {"batch_size": 2**40}}, "hyperparameters.batch_size"),
        (TrainingRequested, {"hyperparameters": {"hidden_sizes": [2**40]}}, "hyperparameters.hidden_sizes.0"),
        (TrainingRequested, {"world_size": 10**9}, "world_size"),
        (TrainingStatus, {"epoch": 2**40}, "epoch"),
    ],
)
def test_absurd_numbers_fail_validation_with_the_field_named(event_class, fields, field_name) -> None:
    data = _valid(event_class)
    for name, value in fields.items():
        data[name] = data[name] | value if isinstance(value, dict) and isinstance(data.get(name), dict) else value
    with pytest.raises(ValidationError) as error:
        event_class.model_validate(data)
    located = {".".join(str(part) for part in problem["loc"]) for problem in error.value.errors()}
    assert field_name in located


def _valid(event_class) -> dict:
    """A valid instance of each event class, as the data a message would carry."""
    artifact = {"uri": "file:///a", "sha256": "a" * 64, "size_bytes": 10, "format": "onnx"}
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []}
    examples = {
        TrainingRequested: {"model_name": "m", "dataset": "sklearn:iris", "hyperparameters": {}},
        TrainingStatus: {"model_name": "m", "request_id": "r", "state": "progress"},
        ModelTrained: {
            "model_name": "m",
            "request_id": "r",
            "artifact": artifact,
            "signature": signature,
            "dataset": "d",
            "split_id": "s",
            "arch": "mlp",
            "hyperparameters": {},
            "metrics": {},
        },
        ModelRegistered: {
            "model_name": "m",
            "version": 1,
            "artifact": artifact,
            "signature": signature,
            "dataset": "d",
            "split_id": "s",
        },
        ModelDecided: {"model_name": "m", "version": 1, "decision": "reject", "reason": "worse"},
        DeploymentChanged: {"model_name": "m", "revision": 1},
    }
    data = examples[event_class]
    event_class.model_validate(data)  # the example itself is valid
    return dict(data)


def test_no_topic_name_ends_with_another() -> None:
    """The consumer loop tells an event on the wrong topic by the topic's ending (after any prefix)."""
    assert not [(a, b) for a in TOPICS for b in TOPICS if a != b and a.endswith(b)]


def test_feedback_carries_one_truth_per_request_and_logged_tensors_are_capped() -> None:
    from pydantic import ValidationError

    from shared.events import MAX_LOGGED_VALUES, FeedbackItem, InferenceFeedback, LoggedTensor

    assert FeedbackItem(request_id="r-1", label="setosa").label == "setosa"
    assert FeedbackItem(request_id="r-2", value=3.5).value == 3.5
    for bad in ({"request_id": "r"}, {"request_id": "r", "label": 1, "value": 1.0}, {"request_id": "../x", "label": 1}):
        with pytest.raises(ValidationError):
            FeedbackItem(**bad)
    with pytest.raises(ValidationError):
        InferenceFeedback(model_name="digits", items=[])
    with pytest.raises(ValidationError):
        LoggedTensor(name="x", datatype="FP32", shape=[1, 5000], data=[0.0] * (MAX_LOGGED_VALUES + 1))
