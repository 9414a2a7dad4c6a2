"""Input drift in the monitor: PSI and the chi-square test per feature on known distributions, the score, the
window of logged inputs, the input_drift rule in the engine, the handler and the REST view."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from monitor_fakes import Clock, FakeReferences, FakeScraper
from pydantic import ValidationError

from services.monitor.adapters.delivery import Dispatcher, KafkaSink
from services.monitor.domain.input_drift import feature_drift, input_drift, rows_of, two_sample_p_value
from services.monitor.domain.input_window import InputWindows
from services.monitor.domain.rules import load_rules
from services.monitor.entrypoints.api import ApiDeps, create_app
from services.monitor.handlers import HANDLERS, DeployedVersions
from services.monitor.input_drift import InputDriftTracker
from services.monitor.service import Monitor
from shared.envelope import EventMeta
from shared.events import (
    AlertChanged,
    FeatureReference,
    InferenceLogged,
    InputReference,
    LoggedTensor,
    new_id,
    utc_now,
)
from shared.input_reference import build_input_reference
from shared.kafka import ListPublisher, bind_handlers

HALVES = FeatureReference(index=0, edges=[0.0], counts=[50, 50])
"""Half the training rows at or below 0, half above."""
TRAINING = np.random.default_rng(0).normal(size=(2000, 4))
REFERENCE = build_input_reference(TRAINING, "input")


def logged(rows: np.ndarray, *, version: int = 1, request_id: str | None = None) -> InferenceLogged:
    tensor = LoggedTensor(name="input", datatype="FP64", shape=list(rows.shape), data=[float(v) for v in rows.ravel()])
    return InferenceLogged(
        model_name="digits",
        request_id=request_id or new_id(),
        version=version,
        route="champion",
        inputs=[tensor],
        outputs=[],
    )


def test_psi_of_a_feature_that_moved_entirely_above_its_median() -> None:
    drift = feature_drift(np.ones(100), HALVES)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert drift.live_counts == (0, 100) and drift.reference_counts == (50, 50)
    assert drift.psi == pytest.approx(expected)
    assert drift.p_value < 1e-10 and drift.drifted


def test_a_feature_distributed_as_in_training_has_no_drift() -> None:
    drift = feature_drift(np.array([-1.0] * 50 + [1.0] * 50), HALVES)
    assert drift.psi == pytest.approx(0.0) and drift.p_value == pytest.approx(1.0) and not drift.drifted


def test_a_large_psi_on_a_handful_of_rows_is_not_yet_drift() -> None:
    """Three rows all above the median: PSI is large, but three rows prove little."""
    drift = feature_drift(np.ones(3), HALVES)
    assert drift.psi > 0.2 and drift.p_value > 0.01 and not drift.drifted


def test_the_two_sample_test_needs_two_bins_with_rows() -> None:
    assert two_sample_p_value(np.array([10, 0]), np.array([5, 0])) == 1.0
    assert two_sample_p_value(np.array([0, 0]), np.array([5, 5])) == 1.0


def test_the_score_is_the_share_of_features_that_drift() -> None:
    live = np.random.default_rng(1).normal(size=(500, 4))
    assert input_drift("digits", "1", live, REFERENCE).score == 0.0
    live[:, 2] += 3  # one feature of four moves
    measured = input_drift("digits", "1", live, REFERENCE)
    assert measured.score == 0.25
    assert [f.feature for f in measured.features if f.drifted] == ["2"]


def test_rows_of_a_record_whole_rows_only_and_numbers_only() -> None:
    reference = InputReference(input="input", row_size=3, rows=2, selection="all", features=[HALVES])
    cut = LoggedTensor(name="input", datatype="FP32", shape=[3, 3], data=[1, 2, 3, 4, 5, 6, 7])  # truncated
    assert rows_of([cut], reference).tolist() == [[1, 2, 3], [4, 5, 6]]  # type: ignore[union-attr]
    renamed = LoggedTensor(name="x", datatype="FP32", shape=[1, 3], data=[1, 2, 3])
    assert rows_of([renamed], reference) is not None  # the one input, under a client's name
    text = LoggedTensor(name="input", datatype="BYTES", shape=[1], data=["a cat"])
    other = LoggedTensor(name="other", datatype="FP32", shape=[1, 3], data=[1, 2, 3])
    assert rows_of([text], reference) is None and rows_of([renamed, other], reference) is None


def test_the_window_counts_a_redelivered_record_once_and_keeps_the_latest_rows() -> None:
    windows = InputWindows(max_rows=10, max_versions=2)
    first = logged(np.zeros((1, 4)), request_id="r-1")
    assert windows.record(first) and not windows.record(first)
    for n in range(12):
        windows.record(logged(np.full((1, 4), n + 1.0)))
    rows = windows.rows(("digits", "1"), REFERENCE)
    assert rows[:, 0].tolist() == [float(n) for n in range(3, 13)]
    windows.record(logged(np.zeros((1, 4)), version=2))
    windows.record(logged(np.zeros((1, 4)), version=3))
    assert windows.versions() == {("digits", "2"), ("digits", "3")}  # the least recently fed went first


def test_the_handler_table_takes_both_dependencies() -> None:
    windows, deployed = InputWindows(), DeployedVersions()
    handlers = bind_handlers(HANDLERS, deployed=deployed, input_windows=windows)
    meta = EventMeta(event_id=new_id(), source="t", time=utc_now(), traceparent=None, type_name="x")
    for handler in handlers[InferenceLogged]:
        handler(logged(np.zeros((2, 4))), meta)
    assert windows.versions() == {("digits", "1")}


RULES = load_rules(
    {
        "rules": [
            {
                "name": "InputDrift",
                "kind": "input_drift",
                "min_rows": 100,
                "group_by": ["model", "version"],
                "threshold": 0.3,
                "for": "10s",
            }
        ]
    }
)


class FakeInputReferences:
    def __init__(self, table: dict[tuple[str, str], InputReference]) -> None:
        self.table = table

    def get(self, model: str, version: str) -> InputReference | None:
        return self.table.get((model, version))

    def refresh(self, wanted: set[tuple[str, str]]) -> None:
        return None


def engine() -> tuple[Monitor, InputDriftTracker, Clock, ListPublisher, Dispatcher]:
    references = FakeInputReferences({("digits", "1"): REFERENCE, ("digits", "2"): REFERENCE})
    tracker, clock, published = InputDriftTracker(InputWindows(max_rows=400), references), Clock(), ListPublisher()
    dispatcher = Dispatcher([KafkaSink(published)])
    monitor = Monitor(
        RULES,
        [],
        scraper=FakeScraper(),
        references=FakeReferences(),
        dispatcher=dispatcher,
        clock=clock,
        input_drift=tracker,
    )
    return monitor, tracker, clock, published, dispatcher


def test_shifted_inputs_fire_the_rule_once_after_for_and_unshifted_ones_do_not() -> None:
    monitor, tracker, clock, published, dispatcher = engine()
    rng = np.random.default_rng(3)
    tracker.windows.record(logged(rng.normal(size=(300, 4)) + 2.0, version=1))  # every feature moved
    tracker.windows.record(logged(rng.normal(size=(300, 4)), version=2))  # as in training
    assert monitor.tick() == []
    [pending] = monitor.active_alerts()
    assert (pending.state, pending.label_map) == ("pending", {"model": "digits", "version": "1"})
    clock.now += 15
    [fired] = monitor.tick()
    assert (fired.state, fired.alert.value) == ("fired", 1.0)
    clock.now += 15
    assert monitor.tick() == []  # fired once
    dispatcher.deliver_due()
    [event] = published.of_type(AlertChanged)
    assert (event.rule, event.state, event.version, event.value) == ("InputDrift", "fired", 1, 1.0)
    assert {k: d.score for k, d in tracker.latest().items()} == {("digits", "1"): 1.0, ("digits", "2"): 0.0}


def test_a_window_below_min_rows_is_not_judged() -> None:
    monitor, tracker, clock, _, _ = engine()
    tracker.windows.record(logged(np.full((50, 4), 9.0)))
    monitor.tick()
    clock.now += 15
    assert monitor.tick() == [] and monitor.active_alerts() == []
    assert tracker.latest()[("digits", "1")].score == 1.0  # measured, shown, but not judged yet


@pytest.mark.parametrize(
    ("change", "message"),
    [({"group_by": ["model"]}, "groups by model and version"), ({"op": "<"}, "op: >")],
)
def test_an_input_drift_rule_is_per_version_and_fires_above(change: dict, message: str) -> None:
    rule = {"name": "X", "kind": "input_drift", "group_by": ["model", "version"], "threshold": 0.3, **change}
    with pytest.raises(ValidationError, match=message):
        load_rules({"rules": [rule]})


def test_drift_over_rest_per_version_and_feature() -> None:
    monitor, tracker, _, published, _ = engine()
    live = np.random.default_rng(4).normal(size=(300, 4))
    live[:, 1] -= 3
    tracker.windows.record(logged(live))
    monitor.tick()
    client = TestClient(create_app(ApiDeps(monitor=monitor, publish_batch=lambda _: [], input_drift=tracker)))
    body = client.get("/api/v1/models/digits/drift").json()
    [version] = body["versions"]
    assert (version["version"], version["rows"], version["score"], version["drifted_features"]) == ("1", 300, 0.25, 1)
    assert [(f["feature"], f["drifted"]) for f in version["features"]] == [
        ("0", False),
        ("1", True),
        ("2", False),
        ("3", False),
    ]
    assert sum(version["features"][1]["live_counts"]) == 300
    missing = client.get("/api/v1/models/wine/drift")
    assert missing.status_code == 404 and "wine" in missing.json()["error"]
    bad = client.get("/api/v1/models/%20bad/drift")
    assert bad.status_code == 422 and "error" in bad.json()
