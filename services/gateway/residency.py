"""Which versions have a session in memory: many models per process under a memory budget.

A version is known (deployed, or pinned by a request) whether or not its session is loaded. A request for
one that is not loaded waits for its load, bounded by the request's deadline; concurrent requests share
one load (single flight), and at most ``load_concurrency`` loads run at once, off the event loop. Room is
made before a load by unloading resident versions in the order of ``budget.victims`` (never one with
requests in flight); a load that fails answers 503 with its reason and is tried again by the first request
after ``retry_after_s``. A version that alone exceeds the budget is loaded anyway once everything that can
go has gone, and the budget reads over (``/status`` says so): Triton refuses such a load, but here a
request for a known version is never refused for memory. Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.gateway.adapters.onnx_runtime import OnnxModel
from services.gateway.budget import Candidate, DeviceName, MemoryBudget, estimate_bytes, victims, warm_order
from services.gateway.domain import DeadlineExceeded, VersionSpec, VersionUnavailable
from services.gateway.fleet import Fleet, LoadedVersion
from shared.onnx import CUDA

log = logging.getLogger(__name__)

OpenModel = Callable[[str, VersionSpec], OnnxModel]
"""A warmed-up session of a version's verified artifact (the deployer's ``open``); runs on a thread."""
FindVersion = Callable[[str, int], VersionSpec | None]
"""The registry's version (None: unknown or archived there); runs on a thread."""


@dataclass
class Resident:
    version: LoadedVersion
    device: DeviceName
    estimated_bytes: int


@dataclass
class Residency:
    """Loads, keeps and unloads versions' sessions within the budget; see the module."""

    fleet: Fleet
    open_model: OpenModel
    make_cold: Callable[[str, VersionSpec], LoadedVersion]
    budget: MemoryBudget
    device: DeviceName = "cpu"
    """Where a load is expected to land (the provider really used decides what it is counted against)."""
    session_overhead_bytes: int = 192 * 1024
    protect_window_s: float = 60.0
    retry_after_s: float = 5.0
    load_concurrency: int = 4
    find_version: FindVersion | None = None
    on_load: Callable[[str, int, str, float | None], None] = lambda model, version, outcome, seconds: None
    on_evict: Callable[[str, int, str], None] = lambda model, version, reason: None
    clock: Callable[[], float] = time.monotonic
    evictions: Counter[str] = field(default_factory=Counter)
    recent_evictions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    loads: Counter[str] = field(default_factory=Counter)
    _resident: dict[int, Resident] = field(default_factory=dict)
    _loading: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    _failures: dict[int, tuple[str, float]] = field(default_factory=dict)
    _traffic: dict[str, float] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None
    _missing: dict[tuple[str, int], float] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.fleet.on_change = self.changed

    # --- the request path -------------------------------------------------------------------------

    def hold_resident(self, version: LoadedVersion) -> bool:
        """Take a reference on ``version`` at once when it is resident (no await: the request path's common
        case); False, and nothing taken, when it must be loaded first (then :meth:`hold`)."""
        if not version.resident:
            return False
        now = self.clock()
        version.last_used = now
        self._traffic[version.model_name] = now
        version.acquire()
        return True

    async def hold(self, version: LoadedVersion) -> None:
        """Take a reference on ``version``, loading its session first when it is not resident; the caller's
        timeout bounds the wait (the load goes on for the next request). VersionUnavailable when it fails."""
        now = self.clock()
        version.last_used = now
        self._traffic[version.model_name] = now
        while not version.resident:  # a loop: another load may evict it between its load and our turn
            failure = self._failures.get(id(version))
            if failure is not None and now - failure[1] < self.retry_after_s:
                raise VersionUnavailable(version.model_name, version.version, failure[0], self.retry_after_s)
            task = self._loading.get(id(version)) or self._start(version)
            await asyncio.shield(task)
            failure = self._failures.get(id(version))
            if failure is not None and not version.resident:
                raise VersionUnavailable(version.model_name, version.version, failure[0], self.retry_after_s)
            now = self.clock()
        version.acquire()  # no await since the check above: nothing can evict it in between

    async def load_now(self, version: LoadedVersion) -> str | None:
        """Load ``version`` now if it is not resident (the repository API's explicit load); the reason when
        its load failed, None when it is resident."""
        if not version.resident:
            self._failures.pop(id(version), None)  # an operator's load retries at once
            await asyncio.shield(self._loading.get(id(version)) or self._start(version))
        return None if version.resident else self.failure_of(version) or "evicted again before it was used"

    async def pinned(self, name: str, number: int, timeout_s: float) -> LoadedVersion | None:
        """A version no deployment serves, for a pinned request: known to the registry and not archived
        there (None otherwise); kept, cold, until a request loads it. The registry is given ``timeout_s``."""
        key = (name, number)
        found = self.fleet.pinned.get(key)
        if found is not None or self.find_version is None:
            return found
        missed = self._missing.get(key)
        if missed is not None and self.clock() - missed < self.retry_after_s:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                spec = await asyncio.to_thread(self.find_version, name, number)
        except TimeoutError as error:
            raise DeadlineExceeded(timeout_s) from error
        except Exception as error:  # noqa: BLE001 - the registry is away: this request cannot be answered now
            reason = f"the registry did not answer ({type(error).__name__})"
            raise VersionUnavailable(name, number, reason, 1.0) from error
        if spec is None:
            self._missing[key] = self.clock()
            return None
        found = self.fleet.pinned.get(key)  # another request may have looked it up meanwhile
        if found is None:
            found = self.fleet.pinned[key] = self.make_cold(name, spec)
            log.info("%s v%s is not deployed; kept for pinned requests, loaded on demand", name, number)
        return found

    # --- loads -------------------------------------------------------------------------------------

    def _start(self, version: LoadedVersion) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._load(version))
        self._loading[id(version)] = task
        return task

    async def _load(self, version: LoadedVersion) -> None:
        """Load ``version``'s session; never raises: a failure is kept for the waiting requests to report."""
        key, name, number = id(version), version.model_name, version.version
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.load_concurrency)
        estimate = estimate_bytes(version.spec.size_bytes, self.session_overhead_bytes)
        try:
            async with self._slots:
                self._make_room(self.device, estimate)
                self.budget.add(self.device, estimate)  # reserved while it loads: parallel loads see it
                started = self.clock()
                try:
                    model = await asyncio.to_thread(self.open_model, name, version.spec)
                finally:
                    self.budget.remove(self.device, estimate)
                version.model.adopt(model)
                version.evicted = None
                self._failures.pop(key, None)
                seconds = self.clock() - started
                self._admit(version)
                self.loads["ok"] += 1
                self.on_load(name, number, "ok", seconds)
        except Exception as error:  # noqa: BLE001 - any failure: this version is not served until a retry
            reason = str(error)[:300] or type(error).__name__
            self._failures[key] = (reason, self.clock())
            self.loads["failed"] += 1
            self.on_load(name, number, "failed", None)
            log.error("%s v%s could not be loaded: %s", name, number, reason)
        finally:
            self._loading.pop(key, None)

    def warm_deployed(self) -> None:
        """``warm`` every deployed champion, then every challenger (call on the event loop)."""
        states = list(self.fleet.models.values())
        self.warm([s.champion for s in states if s.champion] + [s.challenger for s in states if s.challenger])

    def warm(self, versions: list[LoadedVersion]) -> None:
        """Load in the background, ``load_concurrency`` at a time, as many of ``versions`` (in order) as fit
        the budget without evicting anything: start-up is ready before, and requests do not wait for these."""
        room = self.budget.limit(self.device) - self.budget.used.get(self.device, 0)
        sizes = [(v, estimate_bytes(v.spec.size_bytes, self.session_overhead_bytes)) for v in versions]
        if self.budget.limit(self.device) > 0 and room <= 0:
            return
        for version in warm_order(sizes, room if self.budget.limit(self.device) > 0 else 0):
            assert isinstance(version, LoadedVersion)
            if not version.resident and id(version) not in self._loading:
                self._start(version)

    # --- accounting and eviction ---------------------------------------------------------------------

    def changed(self, added: list[LoadedVersion], retired: list[LoadedVersion]) -> None:
        """The fleet installed ``added`` (loaded already by a deployment, or cold) and retired ``retired``."""
        for version in retired:
            self._forget(version)
        for version in added:
            if version.resident:
                self._admit(version)
        for device in list(self.budget.limits):
            self._make_room(device, 0)  # a deployment's eager load may have taken the budget over

    def _admit(self, version: LoadedVersion) -> None:
        if version.retired or id(version) in self._resident:
            return
        device: DeviceName = "cuda" if version.model.provider == CUDA else "cpu"
        estimate = estimate_bytes(version.spec.size_bytes, self.session_overhead_bytes)
        self._resident[id(version)] = Resident(version, device, estimate)
        self.budget.add(device, estimate)

    def _forget(self, version: LoadedVersion) -> None:
        entry = self._resident.pop(id(version), None)
        if entry is not None:
            self.budget.remove(entry.device, entry.estimated_bytes)
        self._failures.pop(id(version), None)

    def _make_room(self, device: DeviceName, wanted: int) -> None:
        needed = self.budget.shortfall(device, wanted)
        if needed <= 0:
            return
        candidates = [self._candidate(key, entry) for key, entry in self._resident.items()]
        chosen = victims(candidates, device, needed)
        for candidate, reason in chosen:
            self._evict(self._resident[candidate.key].version, reason)  # type: ignore[index]
        if sum(c.estimated_bytes for c, _ in chosen) < needed:
            log.warning("%s budget exceeded: nothing more can be unloaded (in flight or loading)", device)

    def _candidate(self, key: int, entry: Resident) -> Candidate:
        version = entry.version
        state = self.fleet.get(version.model_name)
        serving = state is not None and (state.champion is version or state.challenger is version)
        recent = self.clock() - self._traffic.get(version.model_name, float("-inf")) < self.protect_window_s
        busy = version.inflight > 0 or key in self._loading
        return Candidate(key, entry.device, entry.estimated_bytes, version.last_used, serving and recent, busy)

    def _evict(self, version: LoadedVersion, reason: str) -> None:
        entry = self._resident.pop(id(version))
        self.budget.remove(entry.device, entry.estimated_bytes)
        version.model.close()  # the session goes with its last reference; the batcher stays for a reload
        version.evicted = reason
        self.evictions[reason] += 1
        self.recent_evictions.append(
            {"model": version.model_name, "version": version.version, "reason": reason, "at": time.time()}
        )
        self.on_evict(version.model_name, version.version, reason)
        log.info("evicted %s v%s (%s)", version.model_name, version.version, reason)

    # --- what /status and the repository index show ---------------------------------------------------

    def state_of(self, version: LoadedVersion) -> str:
        """loaded, loading, evicted, failed or unloaded (known, never loaded)."""
        if version.resident:
            return "loaded"
        if id(version) in self._loading:
            return "loading"
        if id(version) in self._failures:
            return "failed"
        return "evicted" if version.evicted else "unloaded"

    def failure_of(self, version: LoadedVersion) -> str | None:
        failure = self._failures.get(id(version))
        return failure[0] if failure else None

    def memory(self) -> list[tuple[str, int, int, int]]:
        """Per device: bytes counted, bytes allowed, resident versions (the metrics' gauges)."""
        resident = Counter(entry.device for entry in list(self._resident.values()))
        return [
            (device, self.budget.used.get(device, 0), limit, resident[device])
            for device, limit in self.budget.limits.items()
        ]

    def report(self) -> dict[str, Any]:
        """Budget used and allowed per device, what is resident, and the evictions and why."""
        return {
            "budget": {
                device: {"used_bytes": self.budget.used.get(device, 0), "limit_bytes": limit}
                for device, limit in self.budget.limits.items()
            },
            "resident": [
                {
                    "model": e.version.model_name,
                    "version": e.version.version,
                    "device": e.device,
                    "estimated_bytes": e.estimated_bytes,
                }
                for e in list(self._resident.values())
            ],
            "loading": len(self._loading),
            "loads": dict(self.loads),
            "evictions": dict(self.evictions),
            "recent_evictions": list(self.recent_evictions),
        }
