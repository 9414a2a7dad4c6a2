"""Progressive rollout: canary bakes, their completion, and rollbacks on alerts.

The evaluator keeps no database. A bake's start is the moment the registry made the version the
challenger (its deployment history says when); the book below only remembers when to look again.
After a restart the book is rebuilt from the registry: every challenger that the evaluator put
there, due at ``history.created_at + bake_s``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.evaluator.domain.records import DeploymentRecord, HistoryRecord, VersionRecord

EVALUATOR_ACTOR = "evaluator"
EVENT_ID_NAMESPACE = uuid.UUID("8f7e9c52-61d5-4f0e-b7a4-0c3d2e1f9a66")
PENDING_RETRY_S = 1.0
"""How soon to look again when the registry has not applied the canary yet."""


def derived_event_id(*parts: object) -> str:
    """A stable event id from what caused the decision: a repeated cause can never mint a second decision."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "/".join(str(part) for part in parts)))


@dataclass(frozen=True)
class Bake:
    model_name: str
    version: int
    due_at: float
    """Wall-clock seconds (time.time()) at which to look again."""


class BakeBook:
    """Pending bakes by (model, version); safe to share between the consumer and the bake threads."""

    def __init__(self) -> None:
        self._bakes: dict[tuple[str, int], Bake] = {}
        self._retired: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def schedule(self, bake: Bake, *, keep_existing: bool = False) -> None:
        """Look at the bake again at ``bake.due_at``; a retired (rolled back) version is never scheduled."""
        with self._lock:
            key = (bake.model_name, bake.version)
            if key in self._retired or (keep_existing and key in self._bakes):
                return
            self._bakes[key] = bake

    def retire(self, model_name: str, version: int) -> None:
        """Cancel for good: a version rolled back here is not re-read as a canary while the registry catches up."""
        with self._lock:
            self._bakes.pop((model_name, version), None)
            self._retired.add((model_name, version))

    def cancel(self, model_name: str, version: int) -> bool:
        with self._lock:
            return self._bakes.pop((model_name, version), None) is not None

    def holds(self, model_name: str, version: int) -> bool:
        with self._lock:
            return (model_name, version) in self._bakes

    def due(self, now: float) -> list[Bake]:
        with self._lock:
            return sorted((bake for bake in self._bakes.values() if bake.due_at <= now), key=lambda b: b.due_at)

    def pending(self) -> list[Bake]:
        with self._lock:
            return sorted(self._bakes.values(), key=lambda bake: bake.due_at)


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def canary_entry(history: Sequence[HistoryRecord], version: int) -> HistoryRecord | None:
    """The newest history entry that made ``version`` the challenger (history is newest first)."""
    for entry in history:
        if entry.action == "promote" and entry.to_challenger == version and entry.from_challenger != version:
            return entry
    return None


def champion_entry(history: Sequence[HistoryRecord], version: int) -> HistoryRecord | None:
    """The newest history entry that made ``version`` the champion."""
    for entry in history:
        if entry.to_champion == version and entry.from_champion != version:
            return entry
    return None


def bake_of_challenger(
    model_name: str, deployment: DeploymentRecord, history: Sequence[HistoryRecord], bake_s: float
) -> Bake | None:
    """The bake of the current challenger, when the evaluator made it the canary."""
    if deployment.challenger is None:
        return None
    entry = canary_entry(history, deployment.challenger)
    if entry is None or entry.actor != EVALUATOR_ACTOR:
        return None  # a person's canary is theirs to promote
    return Bake(model_name, deployment.challenger, _epoch(entry.created_at) + bake_s)


@dataclass(frozen=True)
class BakeStep:
    """What to do with a due bake: ``promote`` it, look again at ``wait_until``, or ``drop`` it."""

    action: str
    reason: str
    wait_until: float | None = None
    canary_revision: int | None = None
    baked_s: float | None = None


def next_bake_step(
    bake: Bake,
    record: VersionRecord | None,
    deployment: DeploymentRecord | None,
    history: Sequence[HistoryRecord],
    *,
    now: float,
    bake_s: float,
    give_up_s: float,
) -> BakeStep:
    """Promote a challenger whose bake has run its course; wait while the registry catches up; else drop."""
    if record is None or deployment is None:
        return BakeStep("drop", "the version or its model is gone from the registry")
    if record.status in ("registered", "evaluating"):
        if now - bake.due_at > give_up_s:
            return BakeStep("drop", f"the registry never made v{bake.version} the canary")
        return BakeStep("wait", "the registry has not applied the canary yet", wait_until=now + PENDING_RETRY_S)
    if record.status != "challenger" or deployment.challenger != bake.version:
        return BakeStep("drop", f"v{bake.version} is {record.status} now, no longer the canary")
    entry = canary_entry(history, bake.version)
    started = _epoch(entry.created_at) if entry is not None else bake.due_at - bake_s
    if now < started + bake_s:
        return BakeStep("wait", "the bake has not run its course", wait_until=started + bake_s)
    return BakeStep(
        "promote",
        f"canary v{bake.version} served {deployment.canary_weight:.0%} of traffic for {now - started:.0f} s "
        f"(bake {bake_s:g} s) with no rollback alert: promoted to champion",
        canary_revision=entry.revision if entry is not None else deployment.revision,
        baked_s=now - started,
    )


@dataclass(frozen=True)
class RollbackPlan:
    """Roll ``version`` back (``return_to`` keeps or regains the traffic), or ignore the alert (``ignored``)."""

    version: int
    reason: str
    ignored: bool = False
    return_to: int | None = None
    stage: str | None = None


def plan_rollback(
    version: int,
    rule: str,
    deployment: DeploymentRecord | None,
    history: Sequence[HistoryRecord],
    *,
    now: float,
    window_s: float,
    alert_words: str,
) -> RollbackPlan:
    """A rollback alert rolls back a canary during its bake, or a champion within the window after promotion."""
    if deployment is None:
        return RollbackPlan(version, "the model has no deployment", ignored=True)
    if deployment.challenger == version:
        return RollbackPlan(
            version,
            f"rollback alert {rule} fired for canary v{version} during its bake ({alert_words}): "
            f"rolled back; champion v{deployment.champion} keeps all traffic",
            return_to=deployment.champion,
            stage="canary",
        )
    if deployment.champion != version:
        return RollbackPlan(version, f"v{version} is not deployed", ignored=True)
    entry = champion_entry(history, version)
    if entry is None:
        return RollbackPlan(version, f"no history of v{version}'s promotion", ignored=True)
    age = now - _epoch(entry.created_at)
    if age > window_s:
        return RollbackPlan(
            version, f"v{version} was promoted {age:.0f} s ago, outside the {window_s:g} s window", ignored=True
        )
    if entry.from_champion is None:
        return RollbackPlan(version, f"v{version} displaced no champion: nothing to return to", ignored=True)
    return RollbackPlan(
        version,
        f"rollback alert {rule} fired for champion v{version} {age:.0f} s after its promotion "
        f"(window {window_s:g} s; {alert_words}): rolled back to v{entry.from_champion}",
        return_to=entry.from_champion,
        stage="champion",
    )
