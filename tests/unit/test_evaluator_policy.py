"""The promotion policy: floors, non-inferiority backed by the paired test, limits, compressed models,
and reasons that name the metric and the numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.evaluator.domain.policy import ModelFacts, Policy, judge, judge_first
from services.evaluator.domain.statistics import Interval, McNemar, PairedComparison

POLICY = Policy()
LATENCY = {"latency_b1_p50_ms": 0.02, "latency_b1_p99_ms": 0.05, "latency_b64_p50_ms": 0.1, "latency_b64_p99_ms": 0.3}


def facts(
    version: int, accuracy: float, *, size: int = 200_000, compressed: bool = False, **latency: float
) -> ModelFacts:
    return ModelFacts(
        version, {"accuracy": accuracy, "f1_macro": accuracy - 0.01}, {**LATENCY, **latency}, size, compressed
    )


def comparison(
    metric: str,
    candidate: float,
    champion: float,
    *,
    low: float,
    high: float,
    p_non_inferiority: float,
    p_superiority: float = 0.5,
    mcnemar_p: float = 0.5,
) -> PairedComparison:
    difference = candidate - champion
    return PairedComparison(
        metric,
        Interval(candidate, candidate - 0.02, candidate + 0.02),
        Interval(champion, champion - 0.02, champion + 0.02),
        Interval(difference, low, high),
        0.02,
        p_non_inferiority,
        p_superiority,
        McNemar(5, 4, mcnemar_p),
    )


def both(**kwargs: float) -> dict[str, PairedComparison]:
    found = comparison("accuracy", **kwargs)  # type: ignore[arg-type]
    return {"accuracy": found, "f1_macro": replace(found, metric="f1_macro")}


def test_a_first_version_clearing_the_floors_becomes_champion_at_once() -> None:
    verdict = judge_first(facts(1, 0.97), POLICY)
    assert (verdict.decision, verdict.stage, verdict.claim) == ("promote", "champion", "first")
    assert "accuracy 0.9700 clears the floor 0.80" in verdict.reason


def test_a_first_version_below_a_floor_is_rejected_naming_the_metric() -> None:
    verdict = judge_first(facts(1, 0.52), POLICY)
    assert verdict.decision == "reject"
    assert "accuracy 0.5200 is below the floor 0.80" in verdict.reason
    assert "f1_macro 0.5100 is below the floor 0.75" in verdict.reason


def test_a_non_inferior_candidate_better_only_by_noise_is_not_called_an_improvement() -> None:
    verdict = judge(
        facts(2, 0.975),
        facts(1, 0.970),
        both(
            candidate=0.975,
            champion=0.970,
            low=-0.008,
            high=0.019,
            p_non_inferiority=0.001,
            p_superiority=0.25,
            mcnemar_p=0.62,
        ),
        POLICY,
    )
    assert (verdict.decision, verdict.stage, verdict.canary_weight) == ("promote", "canary", 0.1)
    assert verdict.claim == "non-inferior"
    assert "better only by noise" in verdict.reason and "McNemar p=0.6200" in verdict.reason
    assert "difference +0.0050 (95% CI -0.0080..+0.0190)" in verdict.reason
    assert "improvement" not in verdict.reason.split("better only by noise")[0]


def test_a_significantly_better_candidate_is_an_improvement() -> None:
    verdict = judge(
        facts(2, 0.99),
        facts(1, 0.93),
        both(
            candidate=0.99,
            champion=0.93,
            low=0.03,
            high=0.09,
            p_non_inferiority=0.0,
            p_superiority=0.0,
            mcnemar_p=0.0001,
        ),
        POLICY,
    )
    assert verdict.claim == "improvement" and verdict.decision == "promote"


def test_an_interval_above_zero_without_mcnemar_is_still_not_an_improvement() -> None:
    verdict = judge(
        facts(2, 0.99),
        facts(1, 0.97),
        both(
            candidate=0.99,
            champion=0.97,
            low=0.001,
            high=0.04,
            p_non_inferiority=0.0,
            p_superiority=0.02,
            mcnemar_p=0.08,
        ),
        POLICY,
    )
    assert verdict.claim == "non-inferior"


def test_a_worse_candidate_is_rejected_with_the_metric_and_the_numbers() -> None:
    verdict = judge(
        facts(2, 0.90),
        facts(1, 0.97),
        both(candidate=0.90, champion=0.97, low=-0.10, high=-0.04, p_non_inferiority=0.999),
        POLICY,
    )
    assert verdict.decision == "reject" and verdict.stage is None
    assert "accuracy 0.9000 vs champion v1 0.9700, difference -0.0700" in verdict.reason
    assert "not shown non-inferior within the margin 0.02 (paired bootstrap p=0.9990 >= 0.05)" in verdict.reason


def test_a_slower_candidate_is_rejected_for_latency_even_when_accurate() -> None:
    verdict = judge(
        facts(2, 0.97, latency_b1_p99_ms=3.0),
        facts(1, 0.97),
        both(candidate=0.97, champion=0.97, low=-0.01, high=0.01, p_non_inferiority=0.0),
        POLICY,
    )
    assert verdict.decision == "reject"
    assert "p99 CPU time at batch 1 3.000 ms vs champion 0.050 ms (allowed 2.075 ms)" in verdict.reason


def test_a_much_larger_candidate_is_rejected_for_size() -> None:
    verdict = judge(
        facts(2, 0.97, size=3_000_000),
        facts(1, 0.97),
        both(candidate=0.97, champion=0.97, low=-0.01, high=0.01, p_non_inferiority=0.0),
        POLICY,
    )
    assert verdict.decision == "reject" and "size 2.9 MB vs champion 195.3 KB (allowed 1.4 MB)" in verdict.reason


def test_a_compressed_candidate_smaller_and_non_inferior_in_accuracy_is_promoted_as_compressed() -> None:
    policy = replace(POLICY, primary_metric="f1_macro")
    comparisons = both(candidate=0.969, champion=0.970, low=-0.012, high=0.01, p_non_inferiority=0.01)
    comparisons["f1_macro"] = replace(comparisons["f1_macro"], p_non_inferiority=0.2)  # primary alone would fail
    verdict = judge(facts(2, 0.969, size=60_000, compressed=True), facts(1, 0.970), comparisons, policy)
    assert (verdict.decision, verdict.claim, verdict.stage) == ("promote", "compressed", "canary")
    assert (
        "70% smaller (58.6 KB vs 195.3 KB)" in verdict.reason
        and "accuracy 0.9690 vs champion v1 0.9700" in verdict.reason
    )


def test_a_compressed_candidate_with_no_gain_is_judged_like_any_other() -> None:
    comparisons = both(candidate=0.969, champion=0.970, low=-0.012, high=0.01, p_non_inferiority=0.01)
    verdict = judge(facts(2, 0.969, size=199_000, compressed=True), facts(1, 0.970), comparisons, POLICY)
    assert verdict.claim == "non-inferior"
    assert any(check.name == "compressed_gain" for check in verdict.checks) is False


def test_a_compressed_candidate_no_smaller_but_faster_at_p50_is_promoted_as_compressed() -> None:
    comparisons = both(candidate=0.969, champion=0.970, low=-0.012, high=0.01, p_non_inferiority=0.01)
    faster = facts(2, 0.969, size=199_000, compressed=True, latency_b64_p50_ms=0.05)  # the harness's names
    verdict = judge(faster, facts(1, 0.970), comparisons, POLICY)
    assert verdict.claim == "compressed"
    assert "p50 CPU time 0% lower at batch 1 and 50% at batch 64" in verdict.reason


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_the_policy_describes_itself_for_the_report(margin: float) -> None:
    described = replace(POLICY, margin=margin).as_dict()
    assert described["margin"] == margin and described["floors"] == {"accuracy": 0.80, "f1_macro": 0.75}
