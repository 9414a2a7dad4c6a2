"""What an operator's action will do, said before it is done: the text of each confirmation.

The registry decides; these sentences predict its decision from the deployment and its history by the
registry's own rules (services/registry/domain.py), so the dialog names the consequence before the
operator confirms. One copy of the wording: the page's script asks for it (``/preview``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from shared.registry_models import (
    DeploymentAction,
    DeploymentOut,
    HistoryEntryOut,
    PromoteAction,
    RollbackAction,
    SetCanaryWeightAction,
)

UNUSABLE = ("rolled_back", "rejected")
DEFAULT_CANARY_WEIGHT = 0.1


def former_champions(history: Sequence[HistoryEntryOut]) -> list[int]:
    """Champions of the model before now, newest first, each once (the history comes newest first)."""
    found: list[int] = []
    for entry in history:
        for number in (entry.to_champion, entry.from_champion):
            if number is not None and number not in found:
                found.append(number)
    return found


def previous_champion(current: int, statuses: Mapping[int, str], history: Sequence[HistoryEntryOut]) -> int | None:
    """The version a rollback of ``current`` brings back: the newest usable former champion."""
    for candidate in former_champions(history):
        if candidate != current and statuses.get(candidate) not in (None, *UNUSABLE):
            return candidate
    return None


def percent(weight: float) -> str:
    return f"{weight * 100:.0f}%"


def _champion(deployment: DeploymentOut) -> str:
    return f"version {deployment.champion}" if deployment.champion is not None else "no champion"


def consequence(
    name: str,
    action: DeploymentAction,
    deployment: DeploymentOut,
    statuses: Mapping[int, str],
    history: Sequence[HistoryEntryOut],
) -> str:
    """The sentence the confirmation shows for ``action`` on model ``name`` as it is deployed now."""
    if isinstance(action, RollbackAction):
        return _rollback(name, action.version, deployment, statuses, history)
    if isinstance(action, SetCanaryWeightAction):
        return _set_canary(name, deployment, action.canary_weight)
    return _promote(name, action, deployment, statuses)


def _rollback(
    name: str,
    version: int | None,
    deployment: DeploymentOut,
    statuses: Mapping[int, str],
    history: Sequence[HistoryEntryOut],
) -> str:
    version = version if version is not None else deployment.champion
    if version is None:
        return f"Roll back {name}: it has no champion; the registry will refuse."
    if version == deployment.challenger:
        return (
            f"Roll back {name}: challenger version {version} stops serving its {percent(deployment.canary_weight)} "
            f"of traffic; {_champion(deployment)} serves all traffic."
        )
    if version != deployment.champion:
        return f"Roll back {name}: version {version} is not deployed; the registry will refuse."
    previous = previous_champion(version, statuses, history)
    if previous is None:
        return f"Roll back {name}: no earlier champion precedes version {version}; the registry will refuse."
    share = "all traffic" if deployment.challenger in (None, previous) else "the champion's share of traffic"
    return f"Roll back {name}: version {version} stops serving; version {previous} serves {share}."


def _promote(name: str, action: PromoteAction, deployment: DeploymentOut, statuses: Mapping[int, str]) -> str:
    version = action.version
    canary = action.stage == "canary" or (action.canary_weight is not None and action.stage != "champion")
    if canary:
        weight = action.canary_weight if action.canary_weight is not None else DEFAULT_CANARY_WEIGHT
        replaced = (
            f"; version {deployment.challenger} stops being the challenger"
            if deployment.challenger not in (None, version)
            else ""
        )
        text = (
            f"Promote {name} version {version} as a canary: it serves {percent(weight)} of traffic, "
            f"{_champion(deployment)} serves the rest{replaced}."
        )
    else:
        before = f"; version {deployment.champion} stops serving" if deployment.champion not in (None, version) else ""
        text = f"Promote {name} version {version} to champion: it serves all traffic{before}."
    status = statuses.get(version)
    if action.force:
        was = f" ({status.replace('_', ' ')})" if status else ""
        return f"Force{was}: {text} This overrides the evaluator's decision; your reason is recorded in the history."
    if status in UNUSABLE:
        return f"{text} Version {version} was {status.replace('_', ' ')}: without force the registry will refuse."
    return text


def _set_canary(name: str, deployment: DeploymentOut, weight: float) -> str:
    if deployment.challenger is None:
        return f"Set the canary weight of {name}: it has no challenger; the registry will refuse."
    return (
        f"Set the canary weight of {name}: challenger version {deployment.challenger} goes from "
        f"{percent(deployment.canary_weight)} to {percent(weight)} of traffic; {_champion(deployment)} serves the rest."
    )


def followed_by(alert: Mapping[str, object], history: Sequence[HistoryEntryOut]) -> HistoryEntryOut | None:
    """The deployment change that followed an alert: the oldest change of its model after the alert began
    that took its version (the ``version`` label) out of service; None when nothing did (yet)."""
    labels = alert.get("labels")
    version = labels.get("version") if isinstance(labels, Mapping) else None
    began = alert.get("fired_at") or alert.get("active_at")
    if not isinstance(version, str) or not version.isdigit() or not isinstance(began, str):
        return None
    try:
        since = datetime.fromisoformat(began.replace("Z", "+00:00"))
    except ValueError:
        return None
    number = int(version)
    for entry in reversed(history):  # oldest first
        removed = number in (entry.from_champion, entry.from_challenger) and number not in (
            entry.to_champion,
            entry.to_challenger,
        )
        if removed and entry.created_at >= since:
            return entry
    return None
