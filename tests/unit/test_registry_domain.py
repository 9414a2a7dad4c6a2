"""The registry's deployment rules, pure: promote, reject, rollback and canary weights."""

from __future__ import annotations

import pytest

from services.registry.domain import (
    Decision,
    DecisionNotApplicable,
    DeploymentState,
    VersionNotFound,
    actor_for,
    decide,
    previous_champion,
    resolve_stage,
)


def decision(kind: str, version: int | None = None, **options: object) -> Decision:
    return Decision(model_name="digits", kind=kind, reason="test", actor="evaluator", version=version, **options)  # type: ignore[arg-type]


def test_promote_to_canary_makes_a_challenger_with_its_weight() -> None:
    state = DeploymentState(champion=1, revision=3)
    outcome = decide(state, decision("promote", 2, stage="canary", canary_weight=0.2), {1: "champion", 2: "registered"})
    assert outcome.after == DeploymentState(champion=1, challenger=2, canary_weight=0.2, revision=4)
    assert outcome.status_changes == {2: "challenger"}
    assert outcome.deployment_changed


def test_canary_without_weight_gets_the_default_and_zero_weight_means_shadow() -> None:
    statuses = {1: "champion", 2: "registered"}
    state = DeploymentState(champion=1)
    default = decide(state, decision("promote", 2, stage="canary"), statuses, default_canary_weight=0.05)  # type: ignore[arg-type]
    assert default.after.canary_weight == 0.05 and not default.after.shadow
    shadow = decide(state, decision("promote", 2, canary_weight=0.0), statuses)  # type: ignore[arg-type]
    assert shadow.after.challenger == 2 and shadow.after.shadow


def test_promote_to_champion_archives_the_old_champion_and_clears_the_challenger() -> None:
    state = DeploymentState(champion=1, challenger=2, canary_weight=0.1, revision=5)
    outcome = decide(state, decision("promote", 2, stage="champion"), {1: "champion", 2: "challenger"})
    assert outcome.after == DeploymentState(champion=2, revision=6)
    assert outcome.status_changes == {1: "archived", 2: "champion"}


def test_a_new_challenger_displaces_the_old_one() -> None:
    state = DeploymentState(champion=1, challenger=2, canary_weight=0.1)
    statuses = {1: "champion", 2: "challenger", 3: "registered"}
    outcome = decide(state, decision("promote", 3, canary_weight=0.3), statuses)  # type: ignore[arg-type]
    assert outcome.after.challenger == 3 and outcome.status_changes == {2: "archived", 3: "challenger"}


def test_repeating_a_promotion_changes_nothing() -> None:
    state = DeploymentState(champion=1, challenger=2, canary_weight=0.2, revision=7)
    outcome = decide(state, decision("promote", 2, stage="canary", canary_weight=0.2), {1: "champion", 2: "challenger"})
    assert not outcome.deployment_changed and outcome.after.revision == 7


def test_reject_of_the_challenger_withdraws_it_and_of_a_bystander_changes_only_its_status() -> None:
    state = DeploymentState(champion=1, challenger=2, canary_weight=0.1, revision=2)
    withdrawn = decide(state, decision("reject", 2), {1: "champion", 2: "challenger"})
    assert withdrawn.after == DeploymentState(champion=1, revision=3)
    bystander = decide(state, decision("reject", 3), {1: "champion", 2: "challenger", 3: "registered"})
    assert not bystander.deployment_changed and bystander.status_changes == {3: "rejected"}


def test_the_champion_cannot_be_rejected() -> None:
    with pytest.raises(DecisionNotApplicable):
        decide(DeploymentState(champion=1), decision("reject", 1), {1: "champion"})


def test_rollback_of_the_champion_restores_the_previous_one() -> None:
    state = DeploymentState(champion=3, revision=4)
    statuses = {1: "archived", 2: "archived", 3: "champion"}
    outcome = decide(state, decision("rollback", 3), statuses, former_champions=[2, 1])  # type: ignore[arg-type]
    assert outcome.after == DeploymentState(champion=2, revision=5)
    assert outcome.status_changes == {3: "rolled_back", 2: "champion"}


def test_rollback_skips_former_champions_that_were_rolled_back() -> None:
    statuses = {1: "archived", 2: "champion", 3: "rolled_back"}
    assert previous_champion(2, statuses, [3, 2, 1]) == 1  # type: ignore[arg-type]


def test_rollback_of_the_challenger_withdraws_it() -> None:
    state = DeploymentState(champion=1, challenger=2, canary_weight=0.5, revision=1)
    outcome = decide(state, decision("rollback", 2), {1: "champion", 2: "challenger"})
    assert outcome.after == DeploymentState(champion=1, revision=2) and outcome.status_changes == {2: "rolled_back"}


def test_rollback_without_a_previous_champion_cannot_apply() -> None:
    with pytest.raises(DecisionNotApplicable, match="no champion precedes"):
        decide(DeploymentState(champion=1), decision("rollback", 1), {1: "champion"})
    with pytest.raises(DecisionNotApplicable, match="has no champion"):
        decide(DeploymentState(), decision("rollback"), {})


def test_a_repeated_rollback_is_a_no_op() -> None:
    outcome = decide(DeploymentState(champion=1), decision("rollback", 2), {1: "champion", 2: "rolled_back"})
    assert not outcome.deployment_changed and not outcome.status_changes


def test_unknown_versions_are_reported_with_their_context() -> None:
    with pytest.raises(VersionNotFound) as raised:
        decide(DeploymentState(), decision("promote", 9), {})
    assert (raised.value.name, raised.value.version) == ("digits", 9)


def test_canary_weight_needs_a_challenger() -> None:
    state = DeploymentState(champion=1, challenger=2, canary_weight=0.1, revision=1)
    outcome = decide(state, decision("set_canary_weight", canary_weight=0.5), {1: "champion", 2: "challenger"})
    assert outcome.after.canary_weight == 0.5 and outcome.after.revision == 2
    with pytest.raises(DecisionNotApplicable):
        decide(DeploymentState(champion=1), decision("set_canary_weight", canary_weight=0.5), {1: "champion"})


def test_stage_and_actor_defaults() -> None:
    assert resolve_stage(None, 0.1) == "canary"
    assert resolve_stage(None, None) == "champion"
    assert resolve_stage("canary", None) == "canary"
    assert actor_for("alice") == "user:alice" and actor_for(None) == "api"


def test_a_rejected_version_is_promoted_only_with_force_and_the_outcome_says_so() -> None:
    state = DeploymentState(champion=1, revision=2)
    statuses = {1: "champion", 2: "rejected"}
    for stage in ("canary", "champion"):
        with pytest.raises(DecisionNotApplicable, match="version 2 was rejected; promoting it needs force"):
            decide(state, decision("promote", 2, stage=stage), statuses)  # type: ignore[arg-type]
    forced = decide(state, decision("promote", 2, stage="champion", force=True), statuses)  # type: ignore[arg-type]
    assert forced.forced and forced.after.champion == 2 and forced.status_changes == {1: "archived", 2: "champion"}
    plain = decide(state, decision("promote", 2, stage="champion", force=True), {1: "champion", 2: "registered"})  # type: ignore[arg-type]
    assert not plain.forced  # force on a version that was not rejected changes nothing


def test_a_rolled_back_version_is_not_revived_by_a_late_promote() -> None:
    # The evaluator's bake of v2 racing the rollback that an alert caused: the promote comes second.
    state = DeploymentState(champion=1, revision=4)
    statuses = {1: "champion", 2: "rolled_back"}
    for stage in ("canary", "champion"):
        with pytest.raises(DecisionNotApplicable, match="version 2 was rolled back; promoting it needs force"):
            decide(state, decision("promote", 2, stage=stage), statuses)  # type: ignore[arg-type]
    forced = decide(state, decision("promote", 2, stage="canary", force=True), statuses)  # type: ignore[arg-type]
    assert forced.forced and forced.after.challenger == 2
