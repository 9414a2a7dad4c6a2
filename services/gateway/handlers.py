"""Deployments in: the ``deployment.changed`` handler and the deployer that turns a deployment into
loaded, verified, warmed-up versions and swaps them in.

A swap: fetch each new version's artifact by digest through the store's one verified read path (never
a URI from an event), check its signature, build and warm up its session (all on the caller's thread,
while the old versions keep serving), then install the new snapshot on the event loop and release what
it no longer uses once its requests are done. A version that fails any step is never served: what
served its role before keeps serving, and the next deployment event tries that version again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.gateway.adapters.onnx_runtime import LoadFailed, OnnxModel
from services.gateway.domain import Deployment, VersionSpec, is_newer, previous_after
from services.gateway.fleet import Fleet, LoadedVersion, ModelState
from services.gateway.loading import VersionFactory
from shared.artifacts import ArtifactError, ArtifactStore
from shared.envelope import EventMeta
from shared.errors import TransientError
from shared.events import DeployedVersion, DeploymentChanged, Event

log = logging.getLogger(__name__)

ApplyOutcome = Literal["applied", "stale", "refused", "held"]


def version_spec(deployed: DeployedVersion | None) -> VersionSpec | None:
    if deployed is None:
        return None
    artifact = deployed.artifact
    return VersionSpec(deployed.version, artifact.sha256, artifact.size_bytes, deployed.signature)


def deployment_of(event: DeploymentChanged) -> Deployment:
    """The event as the gateway's deployment (the artifact's URI is deliberately left behind)."""
    return Deployment(
        model_name=event.model_name,
        revision=event.revision,
        champion=version_spec(event.champion),
        challenger=version_spec(event.challenger),
        canary_weight=event.canary_weight,
        shadow=event.shadow,
    )


class VersionRefused(Exception):
    """A version that failed a step of its load: it is not served."""


@dataclass
class Deployer:
    """Applies deployments: loads what is new off the event loop, swaps on it."""

    fleet: Fleet
    store: ArtifactStore
    versions: VersionFactory
    keep_previous: bool = True
    loop: asyncio.AbstractEventLoop | None = None
    on_outcome: Callable[[str, ApplyOutcome], None] = lambda model, outcome: None
    swap_timeout_s: float = 120.0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    """One apply, unload or load at a time: the consumer's worker and the admin API both change models."""

    def apply(self, deployment: Deployment, *, lazy: bool = False) -> ApplyOutcome:
        """Serve ``deployment`` if it is newer than what is served; call from any thread but the loop's.

        ``lazy``: install its new versions without loading them (start-up with many models); the residency
        loads each for its first request, and a version that fails then answers 503 with the reason.

        A version that fails to load is replaced by what served its role before (the current champion
        keeps serving for a refused champion; a refused challenger gets no traffic), and the outcome is
        "refused"; the rest of the deployment (another version, the weights) still applies. A model an
        operator unloaded keeps the newest deployment for its load, and the outcome is "held".
        """
        with self._lock:
            return self._apply(deployment, lazy=lazy)

    def unload(self, name: str) -> bool:
        """Stop serving ``name`` until :meth:`load`, keeping its deployment; False when it is unknown here."""
        with self._lock:
            if name in self.fleet.unloaded:
                return True
            current = self.fleet.get(name)
            if current is None:
                return False
            self.fleet.unloaded[name] = current.deployment
            self._install(name, None)
            log.info("%s unloaded by an operator at revision %d", name, current.deployment.revision)
            return True

    def load(self, name: str) -> ApplyOutcome | None:
        """Serve again the last deployment seen for an unloaded ``name``; None when it is unknown here.

        A model that is served already is left as it is ("stale")."""
        with self._lock:
            deployment = self.fleet.unloaded.pop(name, None)
            if deployment is None:
                return "stale" if self.fleet.get(name) is not None else None
            try:
                return self._apply(deployment)
            except BaseException:
                self.fleet.unloaded.setdefault(name, deployment)  # still unloaded: a later load tries again
                raise

    def _apply(self, deployment: Deployment, *, lazy: bool = False) -> ApplyOutcome:
        name = deployment.model_name
        held = self.fleet.unloaded.get(name)
        if held is not None:
            if is_newer(deployment, held):
                self.fleet.unloaded[name] = deployment
            self.on_outcome(name, "held")
            return "held"
        current = self.fleet.get(name)
        if current is not None and not is_newer(deployment, current.deployment):
            self.on_outcome(name, "stale")
            return "stale"
        fresh: list[LoadedVersion] = []
        refusals: list[str] = []
        try:
            state = self._state_for(deployment, current, fresh, refusals, lazy=lazy)
            self._install(name, state)
        except BaseException:
            for version in fresh:
                version.close()
            raise
        served = {
            role: getattr(state, role).version
            for role in ("champion", "challenger", "previous")
            if getattr(state, role) is not None
        }
        if refusals:
            log.error("%s revision %d: refused %s; serving %s", name, deployment.revision, "; ".join(refusals), served)
            self.on_outcome(name, "refused")
            return "refused"
        log.info("%s revision %d now served: %s", name, deployment.revision, served)
        self.on_outcome(name, "applied")
        return "applied"

    def _state_for(
        self,
        deployment: Deployment,
        current: ModelState | None,
        fresh: list[LoadedVersion],
        refusals: list[str],
        *,
        lazy: bool = False,
    ) -> ModelState:
        loaded = {version.version: version for version in (current.loaded() if current else [])}
        for (model, pinned_number), pinned in list(self.fleet.pinned.items()):
            if model == deployment.model_name:
                loaded.setdefault(pinned_number, pinned)  # a version pinned requests loaded is deployed again

        def obtain(spec: VersionSpec | None, instead: LoadedVersion | None) -> LoadedVersion | None:
            if spec is None:
                return None
            existing = loaded.get(spec.version)
            if existing is not None and existing.spec == spec:
                return existing  # a rollback or a weight change reuses the session it has
            try:
                version = self._load(deployment.model_name, spec, lazy=lazy)
            except VersionRefused as error:
                refusals.append(str(error))
                return instead
            fresh.append(version)
            loaded[spec.version] = version
            return version

        champion = obtain(deployment.champion, current.champion if current else None)
        challenger = obtain(deployment.challenger, None)
        if challenger is champion:
            challenger = None
        previous = None
        if self.keep_previous and current is not None:
            old_champion = current.champion.version if current.champion else None
            old_previous = current.previous.version if current.previous else None
            number = previous_after(old_champion, champion.version if champion else None, old_previous)
            previous = current.find(number) if number is not None else None
        return ModelState(deployment=deployment, champion=champion, challenger=challenger, previous=previous)

    def _load(self, model_name: str, spec: VersionSpec, *, lazy: bool = False) -> LoadedVersion:
        if lazy:
            return self.versions.cold(model_name, spec)
        return self.versions.wrap(model_name, spec, self.open(model_name, spec))

    def open(self, model_name: str, spec: VersionSpec) -> OnnxModel:
        """A warmed-up session of ``spec``'s artifact, read by digest through the store's verified path;
        VersionRefused when the artifact or the session is refused. Call off the event loop."""
        try:
            data = self.store.fetch(spec.sha256, size_bytes=spec.size_bytes)
        except ArtifactError as error:
            raise VersionRefused(f"v{spec.version}: {error}") from error
        except OSError as error:  # the store itself is away (a network filesystem, S3): try again later
            raise TransientError(f"artifact store unavailable: {error}") from error
        try:
            return self.versions.open(model_name, spec, data)
        except LoadFailed as error:
            raise VersionRefused(f"v{spec.version}: {error}") from error

    def _install(self, name: str, state: ModelState | None) -> None:
        if self.loop is None:
            raise RuntimeError("the deployer has no event loop yet")
        future = asyncio.run_coroutine_threadsafe(self.fleet.install(name, state), self.loop)
        future.result(self.swap_timeout_s)


def handle_deployment_changed(event: DeploymentChanged, meta: EventMeta, *, deployer: Deployer) -> None:
    """Serve the deployment the event describes (replays and older revisions change nothing)."""
    deployer.apply(deployment_of(event))


HANDLERS: dict[type[Event], list[Callable[..., None]]] = {DeploymentChanged: [handle_deployment_changed]}
