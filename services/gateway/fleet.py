"""The live table of what the gateway serves: per model, one immutable snapshot of its loaded versions.

Requests read a model's snapshot and take a reference on the version they run; a swap replaces the
snapshot in one assignment on the event loop's thread, then waits for the versions it retired to
finish what they hold before releasing their sessions. Reads and swaps happen on that one thread, so a
request either sees the old snapshot (and finishes on it) or the new one; none sees half of a swap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from services.gateway.adapters.onnx_runtime import OnnxModel
from services.gateway.batching import Batcher
from services.gateway.domain import Deployment, Fault, ModelNotFound, ModelUnloaded, VersionSpec

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedVersion:
    """A version ready to serve: its session, its batching queue and the requests it holds now."""

    model_name: str
    spec: VersionSpec
    model: OnnxModel
    batcher: Batcher
    inflight: int = 0
    retired: bool = False
    last_used: float = 0.0
    """When a request last took it (the residency's clock): the order of eviction."""
    evicted: str | None = None
    """Why its session was unloaded to make room (None: it was never evicted, or is loaded again)."""
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def resident(self) -> bool:
        """Its session is in memory; when not, the residency loads it for the next request."""
        return self.model.session is not None

    def acquire(self) -> None:
        self.inflight += 1
        self._drained.clear()

    def release(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._drained.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request holds this version; False when ``timeout_s`` passed first."""
        if self.inflight == 0:
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.batcher.close()
        self.model.close()


@dataclass(frozen=True)
class ModelState:
    """One model's snapshot: its deployment and the versions loaded for it (``previous`` is the fallback)."""

    deployment: Deployment
    champion: LoadedVersion | None = None
    challenger: LoadedVersion | None = None
    previous: LoadedVersion | None = None

    def loaded(self) -> list[LoadedVersion]:
        found: dict[int, LoadedVersion] = {}
        for version in (self.champion, self.challenger, self.previous):
            if version is not None:
                found.setdefault(version.version, version)
        return list(found.values())

    def find(self, number: int) -> LoadedVersion | None:
        for version in self.loaded():
            if version.version == number:
                return version
        return None


class Fleet:
    """Every served model's snapshot, and the injected faults; mutate only on the event loop's thread."""

    def __init__(self, drain_timeout_s: float = 30.0) -> None:
        self.models: dict[str, ModelState] = {}
        self.faults: dict[tuple[str, int], Fault] = {}
        self.unloaded: dict[str, Deployment] = {}
        """Models an operator unloaded, with the last deployment seen for each (what a load serves)."""
        self.pinned: dict[tuple[str, int], LoadedVersion] = {}
        """Versions no deployment serves that a pinned request asked for (a rolled-back champion, say)."""
        self._drain_timeout_s = drain_timeout_s
        self.released = 0
        self.on_change: Callable[[list[LoadedVersion], list[LoadedVersion]], None] = lambda added, retired: None
        """Told (on the loop's thread) what each install added and retired: the residency's accounting."""

    def get(self, name: str) -> ModelState | None:
        return self.models.get(name)

    def serving(self, name: str, version: str | None) -> LoadedVersion | None:
        """The version a metadata or readiness question is about: ``version``'s (a pinned one kept here
        included), or the champion's (the challenger's while there is no champion); None when it is not
        known here. A known version is ready whether or not its session is resident: a request loads it."""
        state = self.models.get(name)
        if state is None:
            return None
        if version is None:
            return state.champion or state.challenger
        if not version.isdigit() or len(version) >= 10:
            return None
        return state.find(int(version)) or self.pinned.get((name, int(version)))

    def missing(self, name: str) -> ModelNotFound:
        """The error for a request to a model not served: unloaded by an operator, or unknown."""
        return ModelUnloaded(name) if name in self.unloaded else ModelNotFound(name)

    async def install(self, name: str, state: ModelState | None) -> None:
        """Serve ``state`` for ``name`` from now on (None: stop serving it); release what it no longer uses."""
        before = self.models.get(name)
        if state is None:
            self.models.pop(name, None)
        else:
            self.models[name] = state  # the swap: one assignment, on the loop's thread
        keep = {id(version) for version in state.loaded()} if state else set()
        had = {id(version) for version in before.loaded()} if before else set()
        retired = [version for version in (before.loaded() if before else []) if id(version) not in keep]
        for version in retired:
            version.retired = True
        for version in state.loaded() if state else []:
            if self.pinned.get((name, version.version)) is version:
                del self.pinned[(name, version.version)]  # deployed again: the model's state holds it now
        self.on_change([v for v in (state.loaded() if state else []) if id(v) not in had], retired)
        await asyncio.gather(*(self._release(version) for version in retired))

    async def _release(self, version: LoadedVersion) -> None:
        if not await version.drain(self._drain_timeout_s):
            log.warning(
                "%s v%s still held by %d requests after %.0fs; releasing it anyway",
                version.model_name,
                version.version,
                version.inflight,
                self._drain_timeout_s,
            )
        version.close()
        self.released += 1
        log.info("released %s v%s", version.model_name, version.version)

    async def retire_pinned(self, key: tuple[str, int]) -> None:
        """Stop keeping a pinned version (its model is gone); release it once its requests are done."""
        version = self.pinned.pop(key, None)
        if version is not None:
            version.retired = True
            self.on_change([], [version])
            await self._release(version)

    async def close(self) -> None:
        for name in list(self.models):
            await self.install(name, None)
        for key in list(self.pinned):
            await self.retire_pinned(key)
