"""Online accuracy: the join of feedback to logged answers (either order, within the window, bounded), the
accuracy and RMSE maths, the registry facts, and the online_accuracy rule in both engines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from services.monitor.adapters.online_facts import Facts, OnlineView, accuracy_low_of
from services.monitor.domain.evaluate import evaluate
from services.monitor.domain.online_accuracy import Answer, OnlineAccuracy, answer_of
from services.monitor.domain.rules import OnlineAccuracyRule, load_rules
from services.monitor.domain.series import Sample, SeriesStore
from services.monitor.provisioning.promql import condition
from shared.events import FeedbackItem, InferenceLogged, LoggedTensor

RULE = OnlineAccuracyRule(
    name="OnlineAccuracyBelowEvaluation", kind="online_accuracy", group_by=["model", "version"], min_feedback=3
)


def logged(request_id: str, scores: list[float], *, version: int = 1, rows: int = 1) -> InferenceLogged:
    width = len(scores) // rows
    output = LoggedTensor(name="probabilities", datatype="FP32", shape=[rows, width], data=scores)
    return InferenceLogged(
        model_name="digits", request_id=request_id, version=version, route="champion", inputs=[], outputs=[output]
    )


def label(request_id: str, value: int | str) -> FeedbackItem:
    return FeedbackItem(request_id=request_id, label=value)


def test_a_logged_answer_reduces_to_its_top_class_or_its_value() -> None:
    assert answer_of(logged("a", [0.1, 0.7, 0.2]), 5.0) == Answer(1, 1, None, 5.0)
    value = InferenceLogged(
        model_name="m",
        request_id="v",
        version=2,
        route="canary",
        inputs=[],
        outputs=[LoggedTensor(name="value", datatype="FP32", shape=[1, 1], data=[3.5])],
    )
    assert answer_of(value, 0.0) == Answer(2, None, 3.5, 0.0)
    assert answer_of(logged("b", [0.1, 0.9, 0.8, 0.2], rows=2), 0.0) is None  # two rows: two answers
    cut = InferenceLogged(
        model_name="m",
        request_id="c",
        version=1,
        route="champion",
        inputs=[],
        outputs=[LoggedTensor(name="p", datatype="FP32", shape=[1, 10], data=[0.5, 0.5])],
    )
    assert answer_of(cut, 0.0) is None


def test_feedback_joins_its_answer_in_either_order_and_counts_per_version() -> None:
    online = OnlineAccuracy(window_s=60)
    online.logged("digits", "r1", answer_of(logged("r1", [0.9, 0.1]), 0), 0)
    online.feedback("digits", label("r1", 0), 1)  # right
    online.feedback("digits", label("r2", 0), 2)  # before its answer
    online.logged("digits", "r2", answer_of(logged("r2", [0.2, 0.8], version=2), 2), 3)  # wrong, version 2
    online.logged("digits", "r3", answer_of(logged("r3", [0.2, 0.8]), 3), 3)
    online.feedback("digits", label("r3", 0), 4)  # wrong
    scores = online.scores(lambda model, version: None)
    assert (scores[("digits", 1)].accuracy, scores[("digits", 1)].count) == (0.5, 2)
    assert (scores[("digits", 2)].accuracy, scores[("digits", 2)].count) == (0.0, 1)
    assert online.pending("digits") == (0, 0)


def test_a_label_name_is_resolved_through_the_versions_class_names() -> None:
    online = OnlineAccuracy()
    for index, (scores, truth) in enumerate([([0.1, 0.9], "versicolor"), ([0.9, 0.1], "versicolor"), ([1, 0], "5")]):
        online.logged("iris", f"r{index}", answer_of(logged(f"r{index}", scores), 0), 0)
        online.feedback("iris", label(f"r{index}", truth), 0)
    unknown = online.scores(lambda model, version: None)[("iris", 1)]
    assert (unknown.accuracy, unknown.count) == (0.0, 1)  # only "5" (a digit string) can be judged yet
    named = online.scores(lambda model, version: ["setosa", "versicolor"])[("iris", 1)]
    assert (named.accuracy, named.count) == (pytest.approx(1 / 3), 3)


def test_answers_and_early_feedback_wait_only_the_window_and_only_so_many() -> None:
    online = OnlineAccuracy(window_s=10, max_pending=2)
    online.logged("digits", "old", answer_of(logged("old", [1, 0]), 0), 0)
    online.feedback("digits", label("old", 0), 11)  # the answer expired: this waits instead
    assert online.scores(lambda m, v: None) == {}
    assert online.pending("digits") == (0, 1)
    for index in range(5):
        online.logged("digits", f"r{index}", answer_of(logged(f"r{index}", [1, 0]), 30), 30)
    assert online.pending("digits") == (2, 0)  # the old feedback expired too; answers capped at 2
    online.feedback("digits", label("r0", 0), 31)  # evicted: waits
    online.feedback("digits", label("r4", 0), 31)  # kept: judged
    assert online.scores(lambda m, v: None)[("digits", 1)].count == 1


def test_accuracy_is_over_the_latest_outcomes_and_rmse_over_values() -> None:
    online = OnlineAccuracy(max_outcomes=10)
    for index in range(30):
        online.logged("digits", f"r{index}", answer_of(logged(f"r{index}", [1, 0]), 0), 0)
        online.feedback("digits", label(f"r{index}", 0 if index < 20 else 1), 0)  # the last 10 are wrong
    assert online.scores(lambda m, v: None)[("digits", 1)].accuracy == 0.0
    for index, (predicted, truth) in enumerate([(1.0, 2.0), (3.0, 0.0)]):
        answer = Answer(4, None, predicted, 0)
        online.logged("house", f"h{index}", answer, 0)
        online.feedback("house", FeedbackItem(request_id=f"h{index}", value=truth), 0)
    score = online.scores(lambda m, v: None)[("house", 4)]
    assert score.rmse == pytest.approx(math.sqrt((1 + 9) / 2)) and score.value_count == 2 and score.accuracy is None
    online.logged("house", "mixed", Answer(4, None, 1.0, 0), 0)
    online.feedback("house", label("mixed", 1), 0)  # a label for a value: not judged
    assert online.unjudged == 1


def test_the_bound_is_the_newest_reports_accuracy_interval() -> None:
    reports: list[dict[str, Any]] = [
        {"candidate": {"intervals": {"f1_macro": {"low": 0.5}}}},
        {"candidate": {"intervals": {"accuracy": {"estimate": 0.93, "low": 0.9, "high": 0.95}}}},
        {"candidate": {"intervals": {"accuracy": {"low": 0.1}}}},
    ]
    assert accuracy_low_of(reports) == 0.9
    assert accuracy_low_of([{"candidate": "odd"}, {"candidate": {"intervals": {"accuracy": {"low": "x"}}}}]) is None


class FakeFacts:
    def __init__(self, facts: dict[tuple[str, int], Facts]) -> None:
        self.facts = facts
        self.asked: list[tuple[str, int]] = []

    def labels(self, model: str, version: int) -> Sequence[str] | None:
        found = self.facts.get((model, version))
        return found.labels if found else None

    def get(self, model: str, version: int) -> Facts | None:
        return self.facts.get((model, version))

    def refresh(self, wanted: Iterable[tuple[str, int]]) -> None:
        self.asked = sorted(wanted)


def test_the_view_refreshes_the_facts_of_judged_versions_and_keeps_their_bounds() -> None:
    online = OnlineAccuracy()
    online.logged("iris", "r", answer_of(logged("r", [0.2, 0.8]), 0), 0)
    online.feedback("iris", label("r", "versicolor"), 0)
    facts = FakeFacts({("iris", 1): Facts(("setosa", "versicolor"), 0.9)})
    view = OnlineView(online, facts)
    view.update()
    assert facts.asked == [("iris", 1)]
    assert view.scores[("iris", 1)].accuracy == 1.0 and view.bounds == {("iris", 1): 0.9}


def store_with(accuracy: float, count: float, bound: float | None) -> SeriesStore:
    store = SeriesStore(retention_s=600)
    labels = {"model": "digits", "version": "1", "job": "monitor", "instance": "a"}
    samples = [
        Sample("ferry_monitor_online_accuracy", labels, accuracy),
        Sample("ferry_monitor_online_feedback_count", labels, count),
    ]
    if bound is not None:
        samples.append(Sample("ferry_monitor_evaluation_accuracy_low", labels, bound))
    store.ingest("monitor", 100.0, samples)
    return store


def test_the_rule_judges_the_gap_to_the_bound_with_enough_feedback() -> None:
    [observation] = evaluate(RULE, store_with(0.6, 10, 0.9), 100.0, lambda m, v: None)
    assert dict(observation.labels) == {"model": "digits", "version": "1"}
    assert observation.value == pytest.approx(-0.3) and RULE.breached(observation.value)
    assert not RULE.breached(evaluate(RULE, store_with(0.95, 10, 0.9), 100.0, lambda m, v: None)[0].value)
    assert evaluate(RULE, store_with(0.1, 2, 0.9), 100.0, lambda m, v: None) == []  # too little feedback
    assert evaluate(RULE, store_with(0.1, 10, None), 100.0, lambda m, v: None) == []  # no evaluated bound


def test_the_rule_in_promql_and_its_validation() -> None:
    expression = condition(RULE)
    assert "ferry_monitor_online_accuracy" in expression and "ferry_monitor_evaluation_accuracy_low" in expression
    assert ">= 3" in expression and expression.endswith("< 0")
    with pytest.raises(ValidationError, match="groups by model and version"):
        load_rules({"rules": [{"name": "X", "kind": "online_accuracy", "group_by": ["model"]}]})
