"""The registry's rules: version statuses, deployment decisions and their errors. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from shared.registry_models import VersionStatus

VERSION_STATUSES: tuple[VersionStatus, ...] = get_args(VersionStatus)
DecisionKind = Literal["promote", "reject", "rollback", "set_canary_weight"]
Stage = Literal["canary", "champion"]


class RegistryError(Exception):
    """Base of the registry's domain errors; each carries its context."""


class ModelNotFound(RegistryError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not registered")
        self.name = name


class VersionNotFound(RegistryError):
    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name!r} has no version {version}")
        self.name = name
        self.version = version


class ArtifactRejected(RegistryError):
    """An event's artifact is not the store's own, intact copy of its digest: it is never registered."""

    def __init__(self, model_name: str, reason: str) -> None:
        super().__init__(f"artifact of {model_name!r} refused: {reason}")
        self.model_name = model_name
        self.reason = reason


class DecisionNotApplicable(RegistryError):
    """A decision that contradicts the current deployment (e.g. rollback with no previous champion)."""

    def __init__(self, name: str, decision: str, reason: str) -> None:
        super().__init__(f"cannot {decision} on model {name!r}: {reason}")
        self.name = name
        self.decision = decision
        self.reason = reason


class AliasNotFound(RegistryError):
    """No version answers to the alias (no champion yet, no challenger now, or no such alias)."""

    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model {name!r} has no {alias!r} version" if alias in ALIASES else f"no alias {alias!r}")
        self.name = name
        self.alias = alias


class VersionInUse(RegistryError):
    """A version that is deployed (champion or challenger) cannot be archived."""

    def __init__(self, name: str, version: int, role: str) -> None:
        super().__init__(f"version {version} of model {name!r} is the {role}; promote or roll back another first")
        self.name = name
        self.version = version
        self.role = role


class InvalidEdit(RegistryError):
    """An edit whose result breaks a rule of the registry (too many tags, say); ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


ALIASES = ("champion", "challenger")


@dataclass(frozen=True)
class DeploymentState:
    """What a model serves: champion, challenger (the canary), its traffic weight, shadowing, revision."""

    champion: int | None = None
    challenger: int | None = None
    canary_weight: float = 0.0
    shadow: bool = False
    revision: int = 0

    def same_routing(self, other: DeploymentState) -> bool:
        """True when both states route traffic identically (the revision aside)."""
        return replace(self, revision=0) == replace(other, revision=0)


@dataclass(frozen=True)
class Decision:
    """One change request, from the evaluator's event or a user: the same path for both."""

    model_name: str
    kind: DecisionKind
    reason: str
    actor: str
    version: int | None = None
    stage: Stage | None = None
    canary_weight: float | None = None
    shadow: bool | None = None
    force: bool = False
    """Promote a rejected version all the same (only a user can, with a reason; the history marks it)."""


@dataclass(frozen=True)
class Outcome:
    """The result of a decision: the deployment before and after, the statuses that change, and whether a
    rejected version was promoted by force."""

    before: DeploymentState
    after: DeploymentState
    status_changes: Mapping[int, VersionStatus] = field(default_factory=dict)
    forced: bool = False

    @property
    def deployment_changed(self) -> bool:
        return self.after.revision != self.before.revision


def resolve_stage(stage: Stage | None, canary_weight: float | None) -> Stage:
    """A promote without a stage is a canary when it names a weight, else a champion."""
    if stage is not None:
        return stage
    return "canary" if canary_weight is not None else "champion"


def decide(
    state: DeploymentState,
    decision: Decision,
    statuses: Mapping[int, VersionStatus],
    *,
    former_champions: Sequence[int] = (),
    default_canary_weight: float = 0.1,
) -> Outcome:
    """Apply a decision to a deployment. ``statuses`` holds every version the decision touches."""
    if decision.version is not None and decision.version not in statuses:
        raise VersionNotFound(decision.model_name, decision.version)
    if decision.kind == "promote":
        outcome = _promote(state, decision, statuses, default_canary_weight)
    elif decision.kind == "reject":
        outcome = _reject(state, decision, statuses)
    elif decision.kind == "rollback":
        outcome = _rollback(state, decision, statuses, former_champions)
    else:
        outcome = _set_canary_weight(state, decision)
    if outcome.after.same_routing(state):
        return replace(outcome, after=state)
    return replace(outcome, after=replace(outcome.after, revision=state.revision + 1))


def _required_version(decision: Decision) -> int:
    if decision.version is None:
        raise DecisionNotApplicable(decision.model_name, decision.kind, "no version given")
    return decision.version


def _promote(
    state: DeploymentState, decision: Decision, statuses: Mapping[int, VersionStatus], default_canary_weight: float
) -> Outcome:
    version = _required_version(decision)
    # A rejected or rolled-back version comes back only by a person's explicit choice: a late or
    # repeated promote (a second evaluator's bake racing a rollback, say) must not revive it.
    status = statuses.get(version)
    forced = status in ("rejected", "rolled_back")
    if forced and not decision.force:
        done = "was rejected" if status == "rejected" else "was rolled back"
        raise DecisionNotApplicable(
            decision.model_name, "promote", f"version {version} {done}; promoting it needs force and a reason"
        )
    changes: dict[int, VersionStatus] = {}
    if resolve_stage(decision.stage, decision.canary_weight) == "champion":
        for displaced in (state.champion, state.challenger):
            if displaced is not None and displaced != version:
                changes[displaced] = "archived"
        changes[version] = "champion"
        return Outcome(state, DeploymentState(champion=version, revision=state.revision), changes, forced)
    if version == state.champion:
        raise DecisionNotApplicable(decision.model_name, "promote", f"version {version} is already the champion")
    weight = decision.canary_weight if decision.canary_weight is not None else default_canary_weight
    shadow = decision.shadow if decision.shadow is not None else weight == 0.0
    if state.challenger is not None and state.challenger != version:
        changes[state.challenger] = "archived"
    changes[version] = "challenger"
    after = replace(state, challenger=version, canary_weight=weight, shadow=shadow)
    return Outcome(state, after, changes, forced)


def _reject(state: DeploymentState, decision: Decision, statuses: Mapping[int, VersionStatus]) -> Outcome:
    version = _required_version(decision)
    if version == state.champion:
        raise DecisionNotApplicable(decision.model_name, "reject", f"version {version} is the champion; roll it back")
    after = _without_challenger(state) if version == state.challenger else state
    return Outcome(state, after, {version: "rejected"})


def _rollback(
    state: DeploymentState,
    decision: Decision,
    statuses: Mapping[int, VersionStatus],
    former_champions: Sequence[int],
) -> Outcome:
    version = decision.version if decision.version is not None else state.champion
    if version is None:
        raise DecisionNotApplicable(decision.model_name, "rollback", "the model has no champion")
    if version == state.challenger:
        return Outcome(state, _without_challenger(state), {version: "rolled_back"})
    if version != state.champion:
        if statuses.get(version) == "rolled_back":
            return Outcome(state, state)  # already rolled back: a repeated alert changes nothing
        raise DecisionNotApplicable(decision.model_name, "rollback", f"version {version} is not deployed")
    previous = previous_champion(version, statuses, former_champions)
    if previous is None:
        raise DecisionNotApplicable(decision.model_name, "rollback", f"no champion precedes version {version}")
    changes: dict[int, VersionStatus] = {version: "rolled_back", previous: "champion"}
    after = replace(state, champion=previous)
    if state.challenger == previous:
        after = _without_challenger(after)
    return Outcome(state, after, changes)


def previous_champion(
    current: int, statuses: Mapping[int, VersionStatus], former_champions: Sequence[int]
) -> int | None:
    """The newest former champion that is neither the current one nor itself rolled back or rejected."""
    for candidate in former_champions:
        if candidate != current and statuses.get(candidate) not in (None, "rolled_back", "rejected"):
            return candidate
    return None


def _set_canary_weight(state: DeploymentState, decision: Decision) -> Outcome:
    if state.challenger is None:
        raise DecisionNotApplicable(decision.model_name, "set_canary_weight", "the model has no challenger")
    if decision.canary_weight is None:
        raise DecisionNotApplicable(decision.model_name, "set_canary_weight", "no canary weight given")
    shadow = decision.shadow if decision.shadow is not None else state.shadow
    return Outcome(state, replace(state, canary_weight=decision.canary_weight, shadow=shadow))


def _without_challenger(state: DeploymentState) -> DeploymentState:
    return replace(state, challenger=None, canary_weight=0.0, shadow=False)


def alias_target(name: str, alias: str, state: DeploymentState) -> int:
    """The version an alias (champion, challenger) names now; AliasNotFound when none."""
    number = {"champion": state.champion, "challenger": state.challenger}.get(alias)
    if number is None:
        raise AliasNotFound(name, alias)
    return number


def check_archivable(name: str, version: int, state: DeploymentState) -> None:
    """A deployed version is never archived: VersionInUse names its role."""
    for role, number in (("champion", state.champion), ("challenger", state.challenger)):
        if number == version:
            raise VersionInUse(name, version, role)


def merge_tags(
    current: Mapping[str, object], patch: Mapping[str, str | None], *, max_tags: int
) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """Tags after a PATCH (a string sets, None removes) and what changed (``tags.<key>`` → from/to)."""
    merged = dict(current)
    changes: dict[str, dict[str, object]] = {}
    for key, value in patch.items():
        before = merged.get(key)
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
        if before != value:
            changes[f"tags.{key}"] = {"from": before, "to": value}
    if len(merged) > max_tags and len(merged) > len(current):
        raise InvalidEdit("tags", f"at most {max_tags} tags (this edit would make {len(merged)})")
    return merged, changes


def actor_for(user: str | None) -> str:
    """How a manual change is credited in the history: ``user:<name>``, or ``api`` when anonymous."""
    return f"user:{user}" if user else "api"
