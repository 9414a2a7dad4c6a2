"""The promotion policy: floors for a first version, non-inferiority backed by a paired test for the
next ones, latency and size limits, and the compressed-model rule. Every check says what it measured.

A candidate that is better only by noise is promoted as *non-inferior*; it is called an improvement
only when the difference's interval lies above zero and the paired tests agree.

A regressor is judged the same way on its own metrics: floors on R², non-inferiority on RMSE (or MAE) with a
margin relative to the champion's, from the paired bootstrap of the per-row errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from services.evaluator.domain.slices import SliceResult, SliceSpec, describe_slice
from services.evaluator.domain.statistics import PairedComparison

_SHORT = {"batch_1": "b1", "batch_64": "b64"}
Claim = Literal["first", "improvement", "non-inferior", "compressed", "rejected"]
Stage = Literal["canary", "champion"]


@dataclass(frozen=True)
class Policy:
    """The rules and their thresholds (EvaluatorSettings builds this; the README lists the defaults)."""

    primary_metric: Literal["accuracy", "f1_macro"] = "accuracy"
    floors: Mapping[str, float] = field(default_factory=lambda: {"accuracy": 0.80, "f1_macro": 0.75})
    margin: float = 0.02
    alpha: float = 0.05
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    bootstrap_seed: int = 0
    max_latency_ratio: float = 1.5
    latency_tolerance_ms: float = 2.0
    max_latency_p99_ms: float = 100.0
    max_size_ratio: float = 2.0
    size_tolerance_bytes: int = 1 << 20
    max_size_bytes: int = 200 << 20
    compressed_min_gain: float = 0.10
    split_mismatch: Literal["rescore", "reject"] = "rescore"
    canary_weight: float = 0.1
    regression_primary_metric: Literal["rmse", "mae"] = "rmse"
    regression_floors: Mapping[str, float] = field(default_factory=lambda: {"r2": 0.2})
    regression_margin: float = 0.05
    """A regressor's non-inferiority margin, as a share of the champion's primary metric (RMSE 5% worse at most)."""
    slice_margin: float = 0.10
    """A slice is worse when its recall (accuracy) is lower than the champion's by more than this, beyond noise."""
    slice_regression_margin: float = 0.10
    """A regressor's slice is worse when its RMSE is above the champion's by more than this share of it."""
    slice_min_rows: int = 20
    """A slice with fewer rows is reported but not judged."""
    slices: tuple[SliceSpec, ...] = ()
    """Named feature ranges guarded beside each class's recall (each may name the one model it guards)."""

    def primary_for(self, task: str) -> str:
        """The metric a candidate of this task is compared on."""
        return self.regression_primary_metric if task == "regression" else self.primary_metric

    def floors_for(self, task: str) -> Mapping[str, float]:
        """The floors a version of this task must clear (each a metric where higher is better)."""
        return self.regression_floors if task == "regression" else self.floors

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["floors"] = dict(self.floors)
        values["regression_floors"] = dict(self.regression_floors)
        values["slices"] = [spec.as_dict() for spec in self.slices]
        return values


@dataclass(frozen=True)
class ModelFacts:
    """What the policy reads of one scored model."""

    version: int
    metrics: Mapping[str, float]
    latency: Mapping[str, float]
    size_bytes: int
    compressed: bool = False
    task: str = "classification"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The decision, its stage and weight when promoted, the reason, and every check behind it."""

    decision: Literal["promote", "reject"]
    claim: Claim
    reason: str
    checks: tuple[Check, ...] = ()
    stage: Stage | None = None
    canary_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "claim": self.claim,
            "reason": self.reason,
            "stage": self.stage,
            "canary_weight": self.canary_weight,
            "checks": [asdict(check) for check in self.checks],
        }


def rejected(reason: str, check_name: str) -> Verdict:
    """A rejection decided before any scoring (signature, split, unreadable artifact)."""
    return Verdict(decision="reject", claim="rejected", reason=reason, checks=(Check(check_name, False, reason),))


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB" if size < 1 << 20 else f"{size / (1 << 20):.1f} MB"


def floor_checks(candidate: ModelFacts, policy: Policy) -> list[Check]:
    """Absolute floors on quality, and the absolute latency and size limits."""
    checks = []
    for metric, floor in policy.floors_for(candidate.task).items():
        value = candidate.metrics[metric]
        relation = "clears" if value >= floor else "is below"
        checks.append(
            Check(f"floor:{metric}", value >= floor, f"{metric} {value:.4f} {relation} the floor {floor:.2f}")
        )
    p99 = cost(candidate.latency, "batch_1", "p99")
    checks.append(
        Check(
            "limit:latency",
            p99 <= policy.max_latency_p99_ms,
            f"p99 CPU time at batch 1 {p99:.3f} ms (limit {policy.max_latency_p99_ms:g} ms)",
        )
    )
    checks.append(
        Check(
            "limit:size",
            candidate.size_bytes <= policy.max_size_bytes,
            f"size {_kb(candidate.size_bytes)} (limit {_kb(policy.max_size_bytes)})",
        )
    )
    return checks


def cost(latency: Mapping[str, float], batch: str, statistic: str) -> float:
    """A run's CPU time in ms at ``batch_1``/``batch_64``, ``p50``/``p99``, as the shared harness names it.

    The harness (``shared.onnx``) times the model's work on the calling thread's CPU clock, so the
    limits judge what a model costs and not the moments a busy machine's scheduler gave the core to
    someone else; serving latency under real load is the monitor's to watch.
    """
    return latency[f"latency_{_SHORT[batch]}_{statistic}_ms"]


def describe_comparison(comparison: PairedComparison, champion_version: int, confidence: float) -> str:
    """'accuracy 0.9741 vs champion v1 0.9704, difference +0.0037 (95% CI -0.0111..+0.0185)'."""
    difference = comparison.difference
    return (
        f"{comparison.metric} {comparison.candidate.estimate:.4f} vs champion v{champion_version} "
        f"{comparison.champion.estimate:.4f}, difference {difference.estimate:+.4f} "
        f"({confidence:.0%} CI {difference.low:+.4f}..{difference.high:+.4f})"
    )


def non_inferiority_check(comparison: PairedComparison, champion_version: int, policy: Policy) -> Check:
    """Non-inferior when the paired bootstrap rejects 'worse by more than the margin' at level alpha."""
    passed = comparison.p_non_inferiority < policy.alpha
    verdict = (
        f"non-inferior within the margin {comparison.margin:g} (paired bootstrap p={comparison.p_non_inferiority:.4f}"
        f" < {policy.alpha:g})"
        if passed
        else f"not shown non-inferior within the margin {comparison.margin:g} (paired bootstrap "
        f"p={comparison.p_non_inferiority:.4f} >= {policy.alpha:g})"
    )
    summary = describe_comparison(comparison, champion_version, policy.confidence)
    return Check(f"non_inferiority:{comparison.metric}", passed, f"{summary}: {verdict}")


def is_improvement(comparison: PairedComparison, policy: Policy) -> bool:
    """Better beyond noise: the interval of the difference is above 0 and the paired tests reject 'not better'."""
    tests_agree = comparison.p_superiority < policy.alpha
    if comparison.mcnemar is not None and comparison.metric == "accuracy":
        tests_agree = tests_agree and comparison.mcnemar.p_value < policy.alpha
    if comparison.lower_is_better:
        return comparison.difference.high < 0 and tests_agree
    return comparison.difference.low > 0 and tests_agree


def is_better(comparison: PairedComparison) -> bool:
    """The point estimate favours the candidate (a lower RMSE, a higher accuracy)."""
    estimate = comparison.difference.estimate
    return estimate < 0 if comparison.lower_is_better else estimate > 0


def improvement_note(comparison: PairedComparison, policy: Policy) -> str:
    mcnemar = comparison.mcnemar
    if mcnemar is None:
        tests = f"paired bootstrap of per-row errors, p={comparison.p_superiority:.4f} for 'not better'"
    else:
        tests = f"McNemar p={mcnemar.p_value:.4f} on {mcnemar.candidate_only}/{mcnemar.champion_only} discordant rows"
    if is_improvement(comparison, policy):
        return f"a significant improvement ({tests})"
    if is_better(comparison):
        return f"better only by noise ({tests}): announced as non-inferior, not as an improvement"
    return f"no better than the champion ({tests})"


def limit_checks(candidate: ModelFacts, champion: ModelFacts, policy: Policy) -> list[Check]:
    """Latency p99 (batch 1 and 64) and size, relative to the champion."""
    checks = []
    for batch in ("batch_1", "batch_64"):
        mine, theirs = cost(candidate.latency, batch, "p99"), cost(champion.latency, batch, "p99")
        allowed = theirs * policy.max_latency_ratio + policy.latency_tolerance_ms
        checks.append(
            Check(
                f"latency:{batch}",
                mine <= allowed,
                f"p99 CPU time at {batch.replace('_', ' ')} {mine:.3f} ms vs champion {theirs:.3f} ms "
                f"(allowed {allowed:.3f} ms)",
            )
        )
    allowed_size = int(champion.size_bytes * policy.max_size_ratio) + policy.size_tolerance_bytes
    checks.append(
        Check(
            "size",
            candidate.size_bytes <= allowed_size,
            f"size {_kb(candidate.size_bytes)} vs champion {_kb(champion.size_bytes)} (allowed {_kb(allowed_size)})",
        )
    )
    return checks


def compression_gain(candidate: ModelFacts, champion: ModelFacts, policy: Policy) -> Check:
    """A compressed candidate must be smaller, or faster at p50, by at least ``compressed_min_gain``."""
    size_gain = 1 - candidate.size_bytes / max(champion.size_bytes, 1)
    latency_gains = {
        batch: 1 - cost(candidate.latency, batch, "p50") / max(cost(champion.latency, batch, "p50"), 1e-9)
        for batch in ("batch_1", "batch_64")
    }
    passed = max(size_gain, *latency_gains.values()) >= policy.compressed_min_gain
    detail = (
        f"compressed: {size_gain:.0%} smaller ({_kb(candidate.size_bytes)} vs {_kb(champion.size_bytes)}), "
        f"p50 CPU time {latency_gains['batch_1']:.0%} lower at batch 1 and {latency_gains['batch_64']:.0%} at batch 64 "
        f"(a gain of {policy.compressed_min_gain:.0%} in one is needed)"
    )
    return Check("compressed_gain", passed, detail)


def judge_first(candidate: ModelFacts, policy: Policy) -> Verdict:
    """A model's first version: promoted straight to champion when it clears the floors and limits."""
    checks = floor_checks(candidate, policy)
    failed = [check.detail for check in checks if not check.passed]
    if failed:
        return Verdict("reject", "rejected", f"first version v{candidate.version}: " + "; ".join(failed), tuple(checks))
    reason = f"first version v{candidate.version}: " + "; ".join(check.detail for check in checks)
    return Verdict("promote", "first", reason, tuple(checks), stage="champion")


def slice_check(result: SliceResult, policy: Policy) -> Check:
    """A judged slice passes unless it is significantly worse than the champion's beyond the slice margin."""
    summary, name = describe_slice(result, policy.confidence), f"slice:{result.kind}:{result.name}"
    if result.worse:
        return Check(name, False, f"{summary} is worse beyond the slice margin {result.margin:.4g}")
    return Check(name, True, f"{summary}: not worse beyond the slice margin {result.margin:.4g}")


def judge(
    candidate: ModelFacts,
    champion: ModelFacts,
    comparisons: Mapping[str, PairedComparison],
    policy: Policy,
    slices: Sequence[SliceResult] = (),
) -> Verdict:
    """A later version against the champion; ``comparisons`` holds the primary metric and accuracy, ``slices``
    the guarded slices (a judged slice significantly worse beyond the slice margin rejects the candidate)."""
    floors = floor_checks(candidate, policy)
    # The slices sit with the limits: a compressed candidate must clear them too.
    guarded = [slice_check(found, policy) for found in slices if found.judged]
    limits = (*limit_checks(candidate, champion, policy), *guarded)
    primary = comparisons[policy.primary_for(candidate.task)]
    if candidate.compressed and "accuracy" in comparisons:
        gain = compression_gain(candidate, champion, policy)
        accuracy = non_inferiority_check(comparisons["accuracy"], champion.version, policy)
        checks = (*floors, accuracy, gain, *limits)
        if all(check.passed for check in checks):
            reason = f"promote compressed v{candidate.version} as canary: {accuracy.detail}; {gain.detail}"
            return _promote("compressed", reason, checks, policy)
    core = non_inferiority_check(primary, champion.version, policy)
    checks = (*floors, core, *limits)
    failed = [check.detail for check in checks if not check.passed]
    if failed:
        return Verdict("reject", "rejected", f"reject v{candidate.version}: " + "; ".join(failed), checks)
    claim: Claim = "improvement" if is_improvement(primary, policy) else "non-inferior"
    latency = next(check.detail for check in limits if check.name == "latency:batch_1")
    reason = (
        f"promote v{candidate.version} as canary ({claim}): {core.detail}; {improvement_note(primary, policy)}; "
        f"{latency}{_slices_note(guarded)}"
    )
    return _promote(claim, reason, checks, policy)


def _slices_note(guarded: Sequence[Check]) -> str:
    if not guarded:
        return ""
    return f"; {len(guarded)} slices judged, none significantly worse than the champion's beyond the slice margin"


def _promote(claim: Claim, reason: str, checks: tuple[Check, ...], policy: Policy) -> Verdict:
    return Verdict("promote", claim, reason, checks, stage="canary", canary_weight=policy.canary_weight)
