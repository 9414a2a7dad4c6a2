"""The recent labelled production window of a model, read back from Kafka: logged answers joined with feedback.

Both topics are read from ``since_s`` ago (Kafka's offsets-for-times, never a scan from the start) to their ends
now, by ``shared.request_trace.read_since``. A logged answer counts when it is one row of numbers, whole (not
truncated), served (not a shadow copy), and given a class label by feedback; a label by index is named through
the champion's class names. The newest ``max_rows`` pairs are kept. Also here: the retraining requests of a model
within a recent span, which is what a retrain cooldown is kept in (Kafka holds it, so a restart forgets nothing).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from kafka import KafkaConsumer

from shared.events import FeedbackItem, InferenceFeedback, InferenceLogged, TrainingRequested
from shared.production_window import LabelledRow
from shared.request_trace import read_since
from shared.settings import FerrySettings


def labelled_row(logged: InferenceLogged, item: FeedbackItem, class_names: Sequence[str]) -> LabelledRow | None:
    """The window row of one logged answer and its feedback; None when either does not fit a window."""
    if logged.route == "shadow" or logged.truncated or not logged.inputs or item.label is None:
        return None
    tensor = logged.inputs[0]
    rows = tensor.shape[0] if len(tensor.shape) >= 2 else 1
    width = tensor.shape[-1] if tensor.shape else 0
    values = tensor.data
    if rows != 1 or width < 1 or len(values) != width:
        return None
    if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
        return None
    if isinstance(item.label, int):
        if item.label >= len(class_names):
            return None
        label = class_names[item.label]
    elif item.label in class_names:
        label = item.label
    else:
        return None
    return LabelledRow(tuple(float(value) for value in values), label)


def join_window(
    logged: Sequence[InferenceLogged],
    feedback: Sequence[InferenceFeedback],
    model_name: str,
    class_names: Sequence[str],
    max_rows: int,
) -> list[LabelledRow]:
    """The newest ``max_rows`` logged answers of ``model_name`` that feedback labelled, oldest first."""
    answers = {event.request_id: event for event in logged if event.model_name == model_name}
    joined: dict[str, tuple[float, LabelledRow]] = {}
    for event in feedback:
        if event.model_name != model_name:
            continue
        for item in event.items:
            answer = answers.get(item.request_id)
            row = labelled_row(answer, item, class_names) if answer is not None else None
            if row is not None:  # a later label for the same request replaces the earlier one
                joined[item.request_id] = (answer.at.timestamp() if answer else 0.0, row)
    ordered = sorted(joined.values(), key=lambda pair: pair[0])
    return [row for _, row in ordered[-max_rows:]] if max_rows > 0 else []


def read_window(
    settings: FerrySettings,
    model_name: str,
    class_names: Sequence[str],
    *,
    since_s: float,
    max_rows: int,
    timeout_s: float = 60.0,
) -> list[LabelledRow]:
    """The labelled production window of ``model_name`` over the last ``since_s`` seconds (see the module)."""
    since_ms = int((time.time() - since_s) * 1000)
    deadline = time.monotonic() + timeout_s
    needle = model_name.encode()
    consumer = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False, client_id="ferry-window")
    try:
        logged = read_since(consumer, settings.topic(InferenceLogged.topic), since_ms, needle, deadline)
        feedback = read_since(consumer, settings.topic(InferenceFeedback.topic), since_ms, needle, deadline)
    finally:
        consumer.close()
    return join_window(
        [event for event in logged if isinstance(event, InferenceLogged)],
        [event for event in feedback if isinstance(event, InferenceFeedback)],
        model_name,
        class_names,
        max_rows,
    )


def recent_retrains(
    settings: FerrySettings, model_name: str, *, since_s: float, timeout_s: float = 30.0
) -> list[TrainingRequested]:
    """The training requests of ``model_name`` an alert caused, published within the last ``since_s`` seconds."""
    since_ms = int((time.time() - since_s) * 1000)
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False, client_id="ferry-cooldown")
    try:
        found = read_since(consumer, settings.topic(TrainingRequested.topic), since_ms, model_name.encode(), deadline)
    finally:
        consumer.close()
    return [
        event
        for event in found
        if isinstance(event, TrainingRequested) and event.model_name == model_name and event.cause is not None
    ]
