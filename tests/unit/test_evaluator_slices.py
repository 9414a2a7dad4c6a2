"""The evaluator's slices: each class's recall and the named feature ranges, each with its paired interval; a
candidate significantly worse on a slice beyond the slice margin is rejected, naming the slice and the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from console_fakes import version as shown_version
from evaluator_onnx import erring_classifier
from pydantic import ValidationError

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.adapters.registry import version_record
from services.evaluator.domain.policy import ModelFacts, Policy, judge
from services.evaluator.domain.records import VersionRecord
from services.evaluator.domain.slices import SliceSpec, class_slices, range_slices
from services.evaluator.domain.statistics import Interval, McNemar, PairedComparison
from services.evaluator.service import Evaluation, evaluate
from services.evaluator.settings import EvaluatorSettings
from shared.artifacts import ArtifactStore
from shared.datasets import Dataset, Part, Split, fingerprint
from shared.events import ArtifactRef, TrainingRequested
from shared.onnx import open_session, signature_of

POLICY = Policy(bootstrap_samples=1000)
LATENCY = {"latency_b1_p50_ms": 0.02, "latency_b1_p99_ms": 0.05, "latency_b64_p50_ms": 0.1, "latency_b64_p99_ms": 0.3}


def test_a_class_slice_is_that_classs_recall_with_a_paired_interval() -> None:
    labels = np.repeat([0, 1], 50)
    champion = labels.copy()
    candidate = labels.copy()
    candidate[:20] = 1  # 20 of class 0's 50 rows missed: its recall 0.6; class 1 untouched
    zero, one = class_slices(labels, candidate, champion, ("cat", "dog"), POLICY)
    assert (zero.name, zero.kind, zero.metric, zero.rows) == ("cat", "class", "recall", 50)
    assert zero.comparison is not None and one.comparison is not None
    assert zero.comparison.candidate.estimate == pytest.approx(0.6)
    assert zero.comparison.champion.estimate == pytest.approx(1.0)
    assert zero.comparison.difference.estimate == pytest.approx(-0.4)
    assert zero.comparison.difference.low < -0.4 < zero.comparison.difference.high < -0.1
    assert zero.judged and zero.worse
    # Identical answers on dog's rows differ by exactly nothing on every resample.
    assert (one.comparison.difference.low, one.comparison.difference.high) == (0.0, 0.0)
    assert one.judged and not one.worse


def test_a_slice_is_worse_only_when_its_whole_interval_lies_beyond_the_margin() -> None:
    labels = np.zeros(60, dtype=int)
    champion = labels.copy()
    slightly = labels.copy()
    slightly[:9] = 1  # recall 0.85 vs 1.0: worse, but its interval reaches above -0.10
    [found] = class_slices(labels, slightly, champion, ("only",), POLICY)
    assert found.comparison is not None
    assert found.comparison.difference.low < -0.1 < found.comparison.difference.high
    assert not found.worse
    [strict] = class_slices(labels, slightly, champion, ("only",), Policy(bootstrap_samples=1000, slice_margin=0.0))
    assert strict.worse  # with no margin, being worse beyond noise is enough


def test_a_slice_with_too_few_rows_is_reported_but_not_judged() -> None:
    labels = np.array([0] * 10 + [1] * 50)
    candidate = labels.copy()
    candidate[:10] = 1  # every one of the 10 rows of class 0 missed
    small, _ = class_slices(labels, candidate, labels.copy(), ("rare", "common"), POLICY)
    assert small.rows == 10 and not small.judged and not small.worse
    assert small.note == "10 rows, fewer than the 20 a judgement needs: reported only"
    verdict = judge(_facts(2), _facts(1), _comparisons(), POLICY, [small])
    assert verdict.decision == "promote"
    assert not [check for check in verdict.checks if check.name.startswith("slice:")]


def test_a_range_slice_holds_the_rows_whose_feature_is_in_min_inclusive_max_exclusive() -> None:
    features = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]])
    assert SliceSpec("mid", 1, low=2.0, high=4.0).mask(features).tolist() == [False, True, True, False]  # type: ignore[union-attr]
    assert SliceSpec("high", 1, low=3.0).mask(features).tolist() == [False, False, True, True]  # type: ignore[union-attr]
    assert SliceSpec("wide", 5, high=1.0).mask(features) is None
    assert SliceSpec("text", 0, low=0.0).mask(np.array(["a b", "c"], dtype=object)) is None
    assert SliceSpec("mine", 0, low=0.0, model="iris").applies_to("iris")
    assert not SliceSpec("mine", 0, low=0.0, model="iris").applies_to("digits")


def test_a_classifiers_range_slice_is_judged_on_accuracy_and_a_missing_feature_is_not_applicable() -> None:
    rng = np.random.default_rng(0)
    features = np.column_stack([np.arange(200) / 200.0, rng.normal(size=200)])
    labels = rng.integers(0, 3, size=200)
    candidate = labels.copy()
    candidate[150:] = (labels[150:] + 1) % 3  # wrong on every row whose feature 0 is at least 0.75
    specs = [SliceSpec("top", 0, low=0.75), SliceSpec("bottom", 0, high=0.75), SliceSpec("ghost", 7, low=0.0)]
    top, bottom, ghost = range_slices(
        specs, features, labels, candidate, labels.copy(), regression=False, policy=POLICY
    )
    assert (top.kind, top.metric, top.rows) == ("range", "accuracy", 50)
    assert top.comparison is not None and top.comparison.candidate.estimate == 0.0 and top.worse
    assert top.label == "slice 'top' (feature 0 in [0.75, +inf))"
    assert bottom.rows == 150 and not bottom.worse
    assert ghost.comparison is None and not ghost.judged
    assert ghost.note == "not applicable: the inputs have no numeric feature 7"


def test_a_regressors_range_slice_is_judged_on_rmse_with_a_margin_relative_to_the_champions() -> None:
    rng = np.random.default_rng(1)
    features = (np.arange(300) / 300.0)[:, None]
    targets = rng.normal(100, 20, size=300)
    champion = targets + rng.normal(0, 5, size=300)
    candidate = champion.copy()
    candidate[200:] = targets[200:] + rng.normal(0, 25, size=100)  # five times the error on the top third
    specs = [SliceSpec("top", 0, low=2 / 3), SliceSpec("rest", 0, high=2 / 3)]
    top, rest = range_slices(specs, features, targets, candidate, champion, regression=True, policy=POLICY)
    assert top.metric == "rmse" and top.comparison is not None and top.comparison.lower_is_better
    assert top.margin == pytest.approx(0.10 * top.comparison.champion.estimate)
    assert top.comparison.difference.low > top.margin and top.worse
    assert rest.comparison is not None and rest.comparison.difference.estimate == 0.0 and not rest.worse
    verdict = judge(_facts(2, task="regression"), _facts(1, task="regression"), _rmse_comparisons(), POLICY, [top])
    assert verdict.decision == "reject"
    assert "slice 'top' (feature 0 in [0.666667, +inf)) rmse" in verdict.reason
    assert "is worse beyond the slice margin" in verdict.reason


def test_a_policy_reads_its_slices_from_the_settings_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_EVALUATOR_SLICES", '[{"name": "petal-long", "feature": 2, "min": 4.5, "model": "iris"}]')
    monkeypatch.setenv("FERRY_EVALUATOR_SLICE_MARGIN", "0.05")
    monkeypatch.setenv("FERRY_EVALUATOR_SLICE_MIN_ROWS", "8")
    policy = EvaluatorSettings().policy()
    assert policy.slices == (SliceSpec("petal-long", 2, low=4.5, high=None, model="iris"),)
    assert (policy.slice_margin, policy.slice_min_rows) == (0.05, 8)
    assert policy.as_dict()["slices"] == [
        {"name": "petal-long", "feature": 2, "min": 4.5, "max": None, "model": "iris"}
    ]
    for refused, why in (
        ('[{"name": "open", "feature": 2}]', "needs a min, a max or both"),
        ('[{"name": "empty", "feature": 2, "min": 5, "max": 4}]', "min 5 must be below max 4"),
        ('[{"name": "neg", "feature": -1, "min": 0}]', "greater than or equal to 0"),
    ):
        monkeypatch.setenv("FERRY_EVALUATOR_SLICES", refused)
        with pytest.raises(ValidationError, match=why):
            EvaluatorSettings()


# --- the required case, through the real evaluate(): equal accuracy overall, one class much worse ----------------

CLASSES = 10
ROWS_PER_CLASS = 150
CHAMPION_THRESHOLDS = [0.951] * CLASSES  # 7 errors in every class (coins above 0.951): 70 in all
CANDIDATE_THRESHOLDS = [80 / ROWS_PER_CLASS] + [2.0] * (CLASSES - 1)  # 70 errors, all in class 0


def _coin_split() -> Split:
    """Rows ``[one-hot (10), coin in the class's column (10)]`` whose coins are evenly spaced within each class,
    so the two models' error counts are exact."""
    labels = np.repeat(np.arange(CLASSES), ROWS_PER_CLASS)
    coins = np.tile((np.arange(ROWS_PER_CLASS) + 0.5) / ROWS_PER_CLASS, CLASSES)
    features = np.zeros((len(labels), 2 * CLASSES), dtype=np.float32)
    features[np.arange(len(labels)), labels] = 1.0
    features[np.arange(len(labels)), CLASSES + labels] = coins
    names = tuple(f"digit-{index}" for index in range(CLASSES))
    dataset = Dataset("csv:coins.csv", features, labels, names, None, fingerprint(features, labels, names))
    part = Part(features, labels)
    return Split("coins-split", dataset, part, part, part)


def _evaluate(tmp_path: Path, policy: Policy, requested: tuple[SliceSpec, ...] = ()) -> Evaluation:
    store = ArtifactStore(str(tmp_path))
    test = _coin_split()
    records = []
    for version, thresholds in ((2, CANDIDATE_THRESHOLDS), (1, CHAMPION_THRESHOLDS)):
        data = erring_classifier(thresholds)
        uri, sha256, size = store.put_bytes(data)
        artifact = ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx")
        signature = signature_of(open_session(data))
        records.append(
            VersionRecord(
                "coins", version, "registered", artifact, signature, test.dataset.name, "coins-split", slices=requested
            )
        )
    candidate, champion = records
    return evaluate(
        candidate, champion, loader=ModelLoader(store), splits=lambda *_, **__: test, policy=policy, latency_runs=20
    )


def test_a_candidate_with_equal_accuracy_overall_but_one_class_much_worse_is_rejected_naming_the_class(
    tmp_path: Path,
) -> None:
    evaluation = _evaluate(tmp_path, Policy(latency_tolerance_ms=50.0))
    report, verdict = evaluation.report, evaluation.verdict
    accuracy = report["comparison"]["accuracy"]
    assert accuracy["candidate"]["estimate"] == accuracy["champion"]["estimate"] == pytest.approx(1 - 70 / 1500)
    assert accuracy["non_inferior"]  # overall, the candidate passes
    assert verdict.decision == "reject"
    assert verdict.reason.startswith(
        "reject v2: class 'digit-0' recall 0.5333 vs champion 0.9533 (difference -0.4200, 95% CI -"
    )
    assert "150 rows) is worse beyond the slice margin 0.1" in verdict.reason
    assert [check.name for check in verdict.checks if not check.passed] == ["slice:class:digit-0"]
    slices = {found["name"]: found for found in report["slices"]}
    assert len(slices) == CLASSES and all(found["judged"] for found in slices.values())
    assert [name for name, found in slices.items() if found["worse"]] == ["digit-0"]
    assert slices["digit-0"]["difference"]["high"] < -0.1
    assert slices["digit-1"]["difference"]["estimate"] == pytest.approx(7 / 150)  # better where it stopped erring
    assert report["policy"]["slice_margin"] == 0.1


def test_the_same_candidate_is_promoted_when_the_slice_margin_allows_its_worst_class(tmp_path: Path) -> None:
    evaluation = _evaluate(tmp_path, Policy(latency_tolerance_ms=50.0, slice_margin=0.6))
    assert evaluation.verdict.decision == "promote", evaluation.verdict.reason
    assert evaluation.verdict.claim == "non-inferior"
    assert "10 slices judged, none significantly worse than the champion's beyond the slice margin" in (
        evaluation.verdict.reason
    )
    assert not any(found["worse"] for found in evaluation.report["slices"])


def test_a_slice_the_training_request_named_is_judged_and_wins_over_the_policys_of_that_name(tmp_path: Path) -> None:
    # Feature 10 is class 0's coin: from 0.5 up, the candidate is wrong on nearly every row and the champion right.
    requested = (SliceSpec("coin-high", 10, low=0.5),)
    configured = (SliceSpec("coin-high", 11, low=0.5), SliceSpec("other-model", 10, low=0.5, model="not-coins"))
    policy = Policy(latency_tolerance_ms=50.0, slice_margin=0.6, slices=configured)  # class 0 alone passes
    evaluation = _evaluate(tmp_path, policy, requested)
    ranges = [found for found in evaluation.report["slices"] if found["kind"] == "range"]
    assert [(found["name"], found["rows"], found["metric"]) for found in ranges] == [("coin-high", 75, "accuracy")]
    assert ranges[0]["candidate"]["estimate"] == pytest.approx(5 / 75)
    assert ranges[0]["champion"]["estimate"] == pytest.approx(68 / 75)
    assert evaluation.verdict.decision == "reject"
    assert evaluation.verdict.reason.startswith(
        "reject v2: slice 'coin-high' (feature 10 in [0.5, +inf)) accuracy 0.0667 vs champion 0.9067 "
        "(difference -0.8400"
    )
    assert "is worse beyond the slice margin 0.6" in evaluation.verdict.reason


def test_the_registrys_version_carries_the_requests_slices_to_the_evaluator() -> None:
    sliced = shown_version(2, slices=[{"name": "petal-long", "feature": 2, "min": 4.5, "max": None}])
    assert version_record(sliced).slices == (SliceSpec("petal-long", 2, low=4.5, high=None),)
    assert version_record(shown_version(2)).slices == ()  # a registry before slices


def test_a_requests_slices_are_checked_where_they_enter() -> None:
    assert TrainingRequested(model_name="m", dataset="sklearn:iris").slices == []  # an event from before slices
    for slices, why in (
        ([{"name": "a", "feature": 0, "min": 1}, {"name": "a", "feature": 1, "max": 2}], "a name of its own"),
        ([{"name": "b", "feature": 0}], "needs a min, a max or both"),
        ([{"name": "c", "feature": 0, "min": 2, "max": 2}], "min 2 must be below max 2"),
        ([{"name": "d", "feature": 0, "min": float("nan")}], "finite number"),
    ):
        with pytest.raises(ValidationError, match=why):
            TrainingRequested.model_validate({"model_name": "m", "dataset": "sklearn:iris", "slices": slices})


def _facts(version: int, *, task: str = "classification") -> ModelFacts:
    metrics = {"accuracy": 0.95, "f1_macro": 0.94, "rmse": 10.0, "mae": 8.0, "r2": 0.7}
    return ModelFacts(version, metrics, LATENCY, 10_000, task=task)


def _comparisons() -> dict[str, PairedComparison]:
    found = PairedComparison(
        "accuracy",
        Interval(0.95, 0.93, 0.97),
        Interval(0.95, 0.93, 0.97),
        Interval(0, -0.01, 0.01),
        0.02,
        0.0,
        0.5,
        McNemar(3, 3, 1.0),
    )
    return {"accuracy": found, "f1_macro": found}


def _rmse_comparisons() -> dict[str, PairedComparison]:
    found = PairedComparison(
        "rmse", Interval(10, 9, 11), Interval(10, 9, 11), Interval(0, -0.1, 0.1), 0.5, 0.0, 0.5, None, True
    )
    return {"rmse": found, "mae": found}
