"""The evaluator on regressors: the paired bootstrap of per-row errors (known answers), the policy on
regression metrics, the refusal of a regressor against a classifier, and the report's shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evaluator_onnx import fitted_diabetes, fitted_digits
from sklearn.metrics import r2_score

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.policy import ModelFacts, Policy, judge, judge_first
from services.evaluator.domain.records import VersionRecord
from services.evaluator.domain.regression import compare_regressors
from services.evaluator.domain.statistics import bootstrap_errors_one, paired_bootstrap_errors
from services.evaluator.service import DatasetSplits, evaluate
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.events import ArtifactRef
from shared.onnx import open_session, predict, signature_of
from shared.regression import quantile_edges

POLICY = Policy(bootstrap_samples=500)
LATENCY = {"latency_b1_p50_ms": 0.02, "latency_b1_p99_ms": 0.05, "latency_b64_p50_ms": 0.1, "latency_b64_p99_ms": 0.3}
DIABETES = split(load_dataset("sklearn:diabetes"))
RNG = np.random.default_rng(7)
TARGETS = RNG.normal(150, 70, size=200)
CHAMPION = TARGETS + RNG.normal(0, 50, size=200)


def test_halving_every_error_halves_the_rmse_on_every_resample() -> None:
    candidate = TARGETS + (CHAMPION - TARGETS) / 2
    found = paired_bootstrap_errors(
        "rmse", TARGETS, candidate, CHAMPION, samples=1000, seed=1, confidence=0.9, margin=1.0
    )
    assert found.candidate.estimate == pytest.approx(found.champion.estimate / 2)
    # Each resample's difference is exactly -rmse_champion / 2, so its interval is the champion's, halved and flipped.
    assert found.difference.estimate == pytest.approx(-found.champion.estimate / 2)
    assert found.difference.low == pytest.approx(-found.champion.high / 2)
    assert found.difference.high == pytest.approx(-found.champion.low / 2)
    assert found.lower_is_better and found.mcnemar is None
    assert found.p_superiority == 0.0 and found.p_non_inferiority == 0.0


def test_the_same_errors_differ_by_nothing_and_are_not_better() -> None:
    found = paired_bootstrap_errors("mae", TARGETS, CHAMPION, CHAMPION, samples=300, seed=0, confidence=0.95, margin=2)
    assert (found.difference.low, found.difference.estimate, found.difference.high) == (0.0, 0.0, 0.0)
    assert found.p_non_inferiority == 0.0  # never worse by the margin
    assert found.p_superiority == 1.0  # never better either


def test_pairing_makes_the_difference_far_tighter_than_either_interval() -> None:
    candidate = CHAMPION + RNG.normal(0, 2, size=200)  # nearly the champion's errors, row by row
    found = paired_bootstrap_errors(
        "rmse", TARGETS, candidate, CHAMPION, samples=1000, seed=0, confidence=0.95, margin=1
    )
    width = found.difference.high - found.difference.low
    assert width < (found.candidate.high - found.candidate.low) / 5


def test_a_worse_candidate_is_not_non_inferior_and_the_margin_is_a_share_of_the_champions() -> None:
    worse = TARGETS + (CHAMPION - TARGETS) * 1.3
    found = compare_regressors(TARGETS, worse, CHAMPION, POLICY)
    rmse = found["rmse"]
    assert rmse.margin == pytest.approx(0.05 * rmse.champion.estimate)
    assert rmse.difference.low > 0 and rmse.p_non_inferiority > 0.95
    assert set(found) == {"rmse", "mae"}


def test_r2_of_all_rows_is_scikit_learns() -> None:
    found = bootstrap_errors_one("r2", TARGETS, CHAMPION, samples=200, seed=0, confidence=0.95)
    assert found.estimate == pytest.approx(r2_score(TARGETS, CHAMPION))
    assert found.low < found.estimate < found.high


def _facts(version: int, rmse: float, r2: float, *, compressed: bool = False) -> ModelFacts:
    metrics = {"rmse": rmse, "mae": rmse * 0.8, "r2": r2}
    return ModelFacts(version, metrics, LATENCY, 10_000, compressed, task="regression")


def test_a_first_regressor_is_judged_on_the_r2_floor() -> None:
    promoted = judge_first(_facts(1, 55.0, 0.45), POLICY)
    assert promoted.decision == "promote" and "r2 0.4500 clears the floor 0.20" in promoted.reason
    refused = judge_first(_facts(1, 75.0, 0.05), POLICY)
    assert refused.decision == "reject" and "r2 0.0500 is below the floor 0.20" in refused.reason


def test_a_later_regressor_is_judged_on_rmse_non_inferiority_even_when_compressed() -> None:
    better = TARGETS + (CHAMPION - TARGETS) * 0.7
    comparisons = compare_regressors(TARGETS, better, CHAMPION, POLICY)
    verdict = judge(_facts(2, 35.0, 0.7, compressed=True), _facts(1, 50.0, 0.5), comparisons, POLICY)
    assert (verdict.decision, verdict.claim) == ("promote", "improvement"), verdict.reason
    assert verdict.reason.startswith("promote v2 as canary (improvement): rmse")
    worse = compare_regressors(TARGETS, TARGETS + (CHAMPION - TARGETS) * 1.3, CHAMPION, POLICY)
    refused = judge(_facts(2, 65.0, 0.4), _facts(1, 50.0, 0.5), worse, POLICY)
    assert refused.decision == "reject" and "rmse" in refused.reason and "not shown non-inferior" in refused.reason
    by_mae = judge(_facts(2, 65.0, 0.4), _facts(1, 50.0, 0.5), worse, Policy(regression_primary_metric="mae"))
    assert "non_inferiority:mae" in [check.name for check in by_mae.checks]


def _record(store: ArtifactStore, version: int, data: bytes, dataset: str, *, regressor: bool) -> VersionRecord:
    uri, sha256, size = store.put_bytes(data)
    signature = signature_of(open_session(data))
    if regressor:
        signature = signature.regressor(quantile_edges(predict(open_session(data), DIABETES.validation.features)))
    held_out = split(load_dataset(dataset))
    return VersionRecord(
        "m",
        version,
        "registered",
        ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature,
        dataset,
        held_out.split_id,
    )


def _judge(tmp_path: Path, candidate: tuple[bytes, str, bool], champion: tuple[bytes, str, bool] | None):  # type: ignore[no-untyped-def]
    store = ArtifactStore(str(tmp_path))
    data, dataset, regressor = candidate
    mine = _record(store, 2, data, dataset, regressor=regressor)
    theirs = None
    if champion is not None:
        theirs = _record(store, 1, champion[0], champion[1], regressor=champion[2])
    return evaluate(mine, theirs, loader=ModelLoader(store), splits=DatasetSplits(), policy=POLICY, latency_runs=20)


def test_a_classifier_is_never_compared_with_a_regression_champion(tmp_path: Path) -> None:
    evaluation = _judge(
        tmp_path, (fitted_digits(), "sklearn:digits", False), (fitted_diabetes(), "sklearn:diabetes", True)
    )
    assert evaluation.verdict.decision == "reject"
    assert "v2 is a classifier and the champion v1 a regressor" in evaluation.verdict.reason
    assert "a regressor cannot be compared with a classifier" in evaluation.verdict.reason
    assert [check.name for check in evaluation.verdict.checks] == ["task"]


def test_a_regressor_on_a_classification_dataset_and_a_classifier_on_a_regression_one_are_refused(
    tmp_path: Path,
) -> None:
    classifier_on_diabetes = _judge(tmp_path, (fitted_digits(), "sklearn:diabetes", False), None)
    assert "v2 is a classifier, but sklearn:diabetes is a regression dataset" in classifier_on_diabetes.verdict.reason
    regressor_on_digits = _judge(tmp_path, (fitted_diabetes(), "sklearn:digits", True), None)
    assert regressor_on_digits.verdict.decision == "reject"
    assert "is a classification dataset" in regressor_on_digits.verdict.reason


def test_a_regression_report_says_its_task_and_carries_intervals_and_drift_bins(tmp_path: Path) -> None:
    weak = (fitted_diabetes(features=3), "sklearn:diabetes", True)
    evaluation = _judge(tmp_path, (fitted_diabetes(regularisation=0.01), "sklearn:diabetes", True), weak)
    report = evaluation.report
    assert report["task"] == "regression" and report["primary_metric"] == "rmse" and report["classes"] == []
    candidate = report["candidate"]
    assert set(candidate["metrics"]) == {"rmse", "mae", "r2", "mean_error"}
    assert set(candidate["intervals"]) == {"rmse", "mae", "r2"}
    assert "per_class" not in candidate and "confusion_matrix" not in candidate
    # The drift reference: the held-out predictions' shares over the bins the gateway counts live ones in.
    assert len(candidate["prediction_distribution"]) == len(candidate["bin_edges"]) + 1
    assert sum(candidate["prediction_distribution"].values()) == pytest.approx(1.0)
    assert set(report["comparison"]) == {"rmse", "mae"}
    assert report["comparison"]["rmse"]["relative_margin"] == POLICY.regression_margin
    assert report["policy"]["regression_floors"] == {"r2": 0.2}


def test_a_classification_report_keeps_its_keys(tmp_path: Path) -> None:
    evaluation = _judge(
        tmp_path, (fitted_digits(), "sklearn:digits", False), (fitted_digits(rows=200), "sklearn:digits", False)
    )
    report = evaluation.report
    assert report["task"] == "classification" and report["primary_metric"] == "accuracy"
    assert {"per_class", "confusion_matrix", "prediction_distribution", "intervals"} <= set(report["candidate"])
    assert set(report["comparison"]) == {"accuracy", "f1_macro"}
    assert "mcnemar" in report["comparison"]["accuracy"] and "lower_is_better" not in report["comparison"]["accuracy"]


def test_ferry_compare_prints_a_regressors_metrics_and_its_paired_differences(tmp_path: Path) -> None:
    import io

    from services.evaluator.cli import comparison_table, print_table
    from services.evaluator.service import compare

    weak = (fitted_diabetes(features=3), "sklearn:diabetes", True)
    evaluation = _judge(tmp_path, (fitted_diabetes(regularisation=0.01), "sklearn:diabetes", True), weak)
    assert evaluation.candidate is not None and evaluation.champion is not None
    baseline, other = evaluation.champion, evaluation.candidate
    pairs = [compare(other, baseline, DIABETES, POLICY)]
    table = comparison_table("m", DIABETES.split_id, len(DIABETES.test), [baseline, other], pairs, 0.95, 0.05)
    [rmse] = [entry["rmse"] for entry in table["differences"]]
    assert rmse["lower_is_better"] and rmse["mcnemar_p"] is None and rmse["significant"]
    out = io.StringIO()
    print_table(table, out)
    text = out.getvalue()
    assert "RMSE" in text and "R²" in text and "macro F1" not in text
    assert "v2 rmse" in text and "v2 mae" in text
