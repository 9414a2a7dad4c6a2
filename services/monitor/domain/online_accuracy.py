"""Online accuracy: feedback (ground truth by request id) joined to the predictions the gateway logged.

A logged answer waits for its feedback at most ``window_s`` (and feedback that comes before its logged
answer waits as long for it); each model keeps at most ``max_pending`` of each, the oldest going first.
A joined pair becomes an outcome of the version that answered: for a class label, whether it is the
logged top class (a label name is resolved through the version's class names when it is scored, so
nothing here waits for the registry); for a value, the squared error of the logged prediction. Each
version keeps its latest ``max_outcomes`` outcomes: the accuracy (or RMSE) is over those, and their number
is the count it rests on.

Only single-row answers are judged: feedback names a request, and a request of several rows has several
answers. The state lives in memory: a restart starts it empty (see docs/services/monitor.md).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shared.events import FeedbackItem, InferenceLogged

Labels = Callable[[str, int], Sequence[str] | None]
"""(model, version) -> the class names of that version, or None when unknown (yet)."""


@dataclass(frozen=True)
class Answer:
    """What a logged answer is judged on: the version, its top class or its predicted value, and when."""

    version: int
    top_class: int | None
    value: float | None
    at: float


@dataclass(frozen=True)
class Outcome:
    """One joined pair: a class judgement (``top_class`` vs ``label``) or a squared error."""

    top_class: int | None = None
    label: int | str | None = None
    squared_error: float | None = None


@dataclass(frozen=True)
class Score:
    """A version's online score: accuracy over its judged class outcomes, RMSE over its values."""

    accuracy: float | None
    count: int
    rmse: float | None
    value_count: int


def answer_of(event: InferenceLogged, at: float) -> Answer | None:
    """The judged part of a logged answer; None for an answer of several rows (or none) or a cut one."""
    if not event.outputs:
        return None
    first = event.outputs[0]
    shape, data = first.shape, first.data
    rows = shape[0] if len(shape) >= 2 else 1
    width = shape[-1] if shape else 1
    if rows != 1 or len(data) < width or width < 1:
        return None
    numbers = [value for value in data[:width] if isinstance(value, int | float) and not isinstance(value, bool)]
    if len(numbers) != width:
        return None
    if width == 1:
        return Answer(event.version, None, float(numbers[0]), at)
    top = max(range(width), key=numbers.__getitem__)
    return Answer(event.version, top, None, at)


def outcome_of(answer: Answer, item: FeedbackItem) -> Outcome | None:
    """The pair's outcome; None when the truth's kind does not fit the answer (a label for a value, say)."""
    if item.label is not None and answer.top_class is not None:
        return Outcome(top_class=answer.top_class, label=item.label)
    if item.value is not None and answer.value is not None:
        return Outcome(squared_error=(answer.value - item.value) ** 2)
    return None


def correct(outcome: Outcome, names: Sequence[str] | None) -> bool | None:
    """Whether a class outcome is right: a label index, or a label name (or its digits) among ``names``;
    None when a name cannot be resolved yet."""
    label = outcome.label
    if isinstance(label, str):
        if names is not None and label in names:
            label = list(names).index(label)
        elif label.isdigit():
            label = int(label)
        else:
            return None
    return label == outcome.top_class


class OnlineAccuracy:
    """The join and the per-version outcomes; its methods are called from one consumer thread, its reads
    from the tick thread (``scores`` copies what it reads)."""

    def __init__(self, *, window_s: float = 3600.0, max_pending: int = 100_000, max_outcomes: int = 1_000) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        self.max_outcomes = max_outcomes
        self._answers: dict[str, OrderedDict[str, Answer]] = {}
        self._early: dict[str, OrderedDict[str, tuple[FeedbackItem, float]]] = {}
        self._outcomes: dict[tuple[str, int], deque[Outcome]] = {}
        self.unjudged = 0
        """Feedback that met its answer but could not be judged (several rows, a label for a value)."""
        self._lock = threading.Lock()

    def logged(self, model: str, request_id: str, answer: Answer | None, now: float) -> None:
        """A logged answer; judged at once when its feedback came first."""
        with self._lock:
            self._logged(model, request_id, answer, now)

    def feedback(self, model: str, item: FeedbackItem, now: float) -> None:
        """A ground truth; judged at once when its answer is waiting, else it waits for the answer."""
        with self._lock:
            self._feedback(model, item, now)

    def _logged(self, model: str, request_id: str, answer: Answer | None, now: float) -> None:
        self._expire(model, now)
        early = self._early.get(model, OrderedDict()).pop(request_id, None)
        if answer is None:
            self.unjudged += early is not None
            return
        if early is not None:
            self._judge(model, answer, early[0])
            return
        _bounded_put(self._answers.setdefault(model, OrderedDict()), request_id, answer, self.max_pending)

    def _feedback(self, model: str, item: FeedbackItem, now: float) -> None:
        self._expire(model, now)
        answer = self._answers.get(model, OrderedDict()).pop(item.request_id, None)
        if answer is None:
            _bounded_put(self._early.setdefault(model, OrderedDict()), item.request_id, (item, now), self.max_pending)
            return
        self._judge(model, answer, item)

    def _judge(self, model: str, answer: Answer, item: FeedbackItem) -> None:
        outcome = outcome_of(answer, item)
        if outcome is None:
            self.unjudged += 1
            return
        key = (model, answer.version)
        self._outcomes.setdefault(key, deque(maxlen=self.max_outcomes)).append(outcome)

    def _expire(self, model: str, now: float) -> None:
        horizon = now - self.window_s
        answers = self._answers.get(model)
        while answers and next(iter(answers.values())).at < horizon:
            answers.popitem(last=False)
        early = self._early.get(model)
        while early and next(iter(early.values()))[1] < horizon:
            early.popitem(last=False)

    def pending(self, model: str) -> tuple[int, int]:
        """(answers waiting for feedback, feedback waiting for answers) of ``model``."""
        with self._lock:
            return len(self._answers.get(model, ())), len(self._early.get(model, ()))

    def versions(self) -> list[tuple[str, int]]:
        """Every (model, version) with an outcome."""
        with self._lock:
            return list(self._outcomes)

    def scores(self, labels: Labels) -> dict[tuple[str, int], Score]:
        """Every version's score now; class names come from ``labels``."""
        with self._lock:
            copied = {key: list(outcomes) for key, outcomes in self._outcomes.items()}
        found = {}
        for (model, version), outcomes in copied.items():
            names = labels(model, version)
            judged = [correct(o, names) for o in outcomes if o.squared_error is None]
            known = [right for right in judged if right is not None]
            errors = [o.squared_error for o in outcomes if o.squared_error is not None]
            found[(model, version)] = Score(
                accuracy=sum(known) / len(known) if known else None,
                count=len(known),
                rmse=math.sqrt(sum(errors) / len(errors)) if errors else None,
                value_count=len(errors),
            )
        return found


T = TypeVar("T")


def _bounded_put(pending: OrderedDict[str, T], key: str, value: T, limit: int) -> None:
    pending[key] = value
    pending.move_to_end(key)
    while len(pending) > limit:
        pending.popitem(last=False)
