"""Bakes and rollbacks as pure decisions on the registry's deployment and history."""

from __future__ import annotations

from datetime import UTC, datetime

from services.evaluator.domain.records import DeploymentRecord, HistoryRecord, VersionRecord
from services.evaluator.domain.rollout import (
    Bake,
    BakeBook,
    bake_of_challenger,
    derived_event_id,
    next_bake_step,
    plan_rollback,
)
from shared.events import ArtifactRef, Signature

T0 = 1_700_000_000.0
ARTIFACT = ArtifactRef(uri="x", sha256="a" * 64, size_bytes=1, format="onnx")


def entry(revision: int, action: str, *, at: float, actor: str = "evaluator", **moves: int | None) -> HistoryRecord:
    fields = {"from_champion": None, "to_champion": None, "from_challenger": None, "to_challenger": None, **moves}
    return HistoryRecord(
        revision=revision,
        action=action,
        to_canary_weight=0.1,
        actor=actor,
        reason="r",
        created_at=datetime.fromtimestamp(at, UTC),
        **fields,
    )  # type: ignore[arg-type]


def version(number: int, status: str) -> VersionRecord:
    return VersionRecord("m", number, status, ARTIFACT, Signature(inputs=[], outputs=[]), "sklearn:digits", "s")


CANARY_HISTORY = [
    entry(2, "promote", at=T0 + 100, from_champion=1, to_champion=1, to_challenger=2),
    entry(1, "promote", at=T0, to_champion=1),
]
IN_BAKE = DeploymentRecord(champion=1, challenger=2, canary_weight=0.1, revision=2)


def test_the_book_schedules_cancels_and_retires() -> None:
    book = BakeBook()
    book.schedule(Bake("m", 2, T0 + 10))
    book.schedule(Bake("m", 2, T0 + 99), keep_existing=True)  # a resync does not move a known bake
    book.schedule(Bake("n", 1, T0 + 5))
    assert [bake.model_name for bake in book.due(T0 + 20)] == ["n", "m"]
    assert book.due(T0) == []
    book.retire("m", 2)
    book.schedule(Bake("m", 2, T0 + 10))  # a rolled-back version is never baked again
    assert not book.holds("m", 2) and book.cancel("n", 1) and book.pending() == []


def test_a_bake_is_rebuilt_from_the_history_of_an_evaluator_canary() -> None:
    bake = bake_of_challenger("m", IN_BAKE, CANARY_HISTORY, bake_s=60)
    assert bake == Bake("m", 2, T0 + 160)
    by_hand = [entry(2, "promote", at=T0 + 100, actor="user:alice", to_challenger=2), *CANARY_HISTORY[1:]]
    assert bake_of_challenger("m", IN_BAKE, by_hand, bake_s=60) is None  # a person's canary is theirs
    assert bake_of_challenger("m", DeploymentRecord(1, None, 0.0, 1), CANARY_HISTORY, bake_s=60) is None


def test_a_due_bake_promotes_after_its_course_and_waits_before() -> None:
    bake = Bake("m", 2, T0 + 160)
    early = next_bake_step(
        bake, version(2, "challenger"), IN_BAKE, CANARY_HISTORY, now=T0 + 150, bake_s=60, give_up_s=600
    )
    assert early.action == "wait" and early.wait_until == T0 + 160
    done = next_bake_step(
        bake, version(2, "challenger"), IN_BAKE, CANARY_HISTORY, now=T0 + 161, bake_s=60, give_up_s=600
    )
    assert done.action == "promote" and done.canary_revision == 2
    assert "canary v2 served 10% of traffic for 61 s (bake 60 s) with no rollback alert" in done.reason


def test_a_bake_waits_for_the_registry_and_drops_what_moved_on() -> None:
    bake = Bake("m", 2, T0 + 160)
    pending = next_bake_step(
        bake,
        version(2, "registered"),
        DeploymentRecord(1, None, 0.0, 1),
        CANARY_HISTORY[1:],
        now=T0 + 161,
        bake_s=60,
        give_up_s=600,
    )
    assert pending.action == "wait"
    late = next_bake_step(
        bake, version(2, "registered"), DeploymentRecord(1, None, 0.0, 1), [], now=T0 + 900, bake_s=60, give_up_s=600
    )
    assert late.action == "drop"
    for status in ("rolled_back", "archived", "champion", "rejected"):
        assert (
            next_bake_step(
                bake, version(2, status), IN_BAKE, CANARY_HISTORY, now=T0 + 161, bake_s=60, give_up_s=600
            ).action
            == "drop"
        )


def test_an_alert_rolls_back_a_baking_canary() -> None:
    plan = plan_rollback(2, "error_rate", IN_BAKE, CANARY_HISTORY, now=T0 + 120, window_s=3600, alert_words="w")
    assert not plan.ignored and plan.return_to == 1 and plan.stage == "canary"
    assert "rollback alert error_rate fired for canary v2 during its bake" in plan.reason


def test_an_alert_rolls_back_a_champion_only_within_the_window() -> None:
    promoted = [entry(3, "promote", at=T0 + 200, from_champion=1, to_champion=2, from_challenger=2), *CANARY_HISTORY]
    deployment = DeploymentRecord(champion=2, challenger=None, canary_weight=0.0, revision=3)
    inside = plan_rollback(2, "p99", deployment, promoted, now=T0 + 300, window_s=600, alert_words="w")
    assert not inside.ignored and inside.return_to == 1 and "100 s after its promotion" in inside.reason
    outside = plan_rollback(2, "p99", deployment, promoted, now=T0 + 900, window_s=600, alert_words="w")
    assert outside.ignored and "outside the 600 s window" in outside.reason
    first = DeploymentRecord(champion=1, challenger=None, canary_weight=0.0, revision=1)
    assert plan_rollback(1, "p99", first, CANARY_HISTORY[1:], now=T0 + 5, window_s=600, alert_words="w").ignored
    assert plan_rollback(7, "p99", deployment, promoted, now=T0, window_s=600, alert_words="w").ignored


def test_derived_event_ids_are_stable_and_distinct() -> None:
    assert derived_event_id("m", 2, "sha", "evaluation") == derived_event_id("m", 2, "sha", "evaluation")
    assert derived_event_id("m", 2, "sha", "evaluation") != derived_event_id("m", 3, "sha", "evaluation")
