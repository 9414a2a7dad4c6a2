"""Many models per process: the eviction order, the budget per device, single-flight loads on demand, no
eviction under a request in flight, and a failed load answered with its reason and tried again later."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from services.gateway.adapters.onnx_runtime import OnnxLoader, OnnxModel
from services.gateway.batching import Batcher
from services.gateway.budget import Candidate, MemoryBudget, estimate_bytes, victims, warm_order
from services.gateway.domain import BatchConfig, DeadlineExceeded, Deployment, VersionSpec, VersionUnavailable
from services.gateway.fleet import Fleet, LoadedVersion, ModelState
from services.gateway.residency import Residency
from services.gateway.sample_models import classifier_bytes, classifier_signature
from shared.onnx import CUDA

MODEL_BYTES = classifier_bytes(4, 2)
OVERHEAD = 1000
COST = estimate_bytes(len(MODEL_BYTES), OVERHEAD)


def spec(number: int) -> VersionSpec:
    return VersionSpec(number, f"{number:064x}", len(MODEL_BYTES), classifier_signature(4, 2))


def cold(name: str, version_spec: VersionSpec) -> LoadedVersion:
    model = OnnxModel.cold(version_spec.signature)
    return LoadedVersion(name, version_spec, model, Batcher(model.run, BatchConfig()))


class Opener:
    """Real sessions of a small model, counted; a load can be made to fail or to wait for a gate."""

    def __init__(self, provider: str | None = None) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        self.failing: set[str] = set()
        self.gate: threading.Event | None = None
        self.provider = provider

    def __call__(self, name: str, version_spec: VersionSpec) -> OnnxModel:
        self.calls[(name, version_spec.version)] += 1
        if self.gate is not None:
            self.gate.wait(10)
        if name in self.failing:
            raise RuntimeError(f"v{version_spec.version}: the artifact's sha256 does not match")
        model = OnnxLoader("cpu").load(MODEL_BYTES, version_spec.signature)
        if self.provider:
            model.provider = self.provider
        return model


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def residency(
    budget_versions: int, opener: Opener, clock: Clock, *, device: str = "cpu", window_s: float = 60.0
) -> Residency:
    limits = {"cpu": 0, "cuda": 0}
    limits[device] = budget_versions * COST
    return Residency(
        Fleet(),
        opener,
        cold,
        MemoryBudget(limits),  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        session_overhead_bytes=OVERHEAD,
        protect_window_s=window_s,
        retry_after_s=5.0,
        clock=clock,
    )


async def serve(res: Residency, name: str, number: int = 1) -> LoadedVersion:
    """Install ``name`` with a cold champion ``number``, as a lazy start does."""
    version = cold(name, spec(number))
    await res.fleet.install(name, ModelState(Deployment(name, 1, champion=version.spec), champion=version))
    return version


async def use(res: Residency, version: LoadedVersion, clock: Clock) -> None:
    clock.now += 1
    await res.hold(version)
    version.release()


def run(scenario: Callable[[], object]) -> object:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def candidate(key: str, last_used: float, *, protected: bool = False, busy: bool = False) -> Candidate:
    return Candidate(key, "cpu", 10, last_used, protected, busy)


def test_victims_go_least_recently_used_first_unprotected_before_protected_never_busy() -> None:
    candidates = [
        candidate("old-protected", 1, protected=True),
        candidate("busy", 0, busy=True),
        candidate("recent", 5),
        candidate("older", 2),
        Candidate("gpu", "cuda", 10, 0, False, False),
    ]
    chosen = victims(candidates, "cpu", 25)
    assert [(c.key, reason) for c, reason in chosen] == [
        ("older", "budget"),
        ("recent", "budget"),
        ("old-protected", "protected_budget"),
    ]
    assert victims(candidates, "cpu", 0) == []
    assert [c.key for c, _ in victims(candidates, "cuda", 5)] == ["gpu"]


def test_the_budget_counts_per_device_and_a_limit_of_zero_is_none() -> None:
    budget = MemoryBudget({"cpu": 100, "cuda": 0})
    budget.add("cpu", 80)
    assert budget.shortfall("cpu", 30) == 10 and budget.shortfall("cpu", 20) == 0
    budget.add("cuda", 10**12)
    assert budget.shortfall("cuda", 1) == 0
    budget.remove("cpu", 500)
    assert budget.used["cpu"] == 0
    assert warm_order([("a", 40), ("b", 40), ("c", 40)], 100) == ["a", "b"]
    assert warm_order([("a", 40), ("b", 40)], 0) == ["a", "b"]


def test_a_cold_version_loads_once_for_concurrent_requests() -> None:
    opener, clock = Opener(), Clock()

    async def scenario() -> tuple[int, bool]:
        res = residency(4, opener, clock)
        version = await serve(res, "m")
        assert not version.resident and res.state_of(version) == "unloaded"
        await asyncio.gather(*(res.hold(version) for _ in range(5)))
        return version.inflight, version.resident

    assert run(scenario) == (5, True)
    assert opener.calls == Counter({("m", 1): 1})


def test_the_least_recently_used_version_is_evicted_and_loads_again_on_demand() -> None:
    opener, clock = Opener(), Clock()

    async def scenario() -> None:
        res = residency(2, opener, clock, window_s=0)
        a, b, c = [await serve(res, name) for name in "abc"]
        await use(res, a, clock)
        await use(res, b, clock)
        await use(res, a, clock)  # b is now the least recently used
        await use(res, c, clock)
        assert (a.resident, b.resident, c.resident) == (True, False, True)
        assert res.state_of(b) == "evicted" and b.evicted == "budget"
        assert res.report()["evictions"] == {"budget": 1}
        assert res.budget.used["cpu"] == 2 * COST
        await use(res, b, clock)  # answered: loaded again, evicting a (now the oldest)
        assert b.resident and not a.resident

    run(scenario)
    assert opener.calls[("b", 1)] == 2


def test_a_champion_with_recent_traffic_outlives_a_more_recently_used_pinned_version() -> None:
    opener, clock = Opener(), Clock()

    async def scenario() -> None:
        res = residency(2, opener, clock, window_s=60)
        champion = await serve(res, "c")
        pinned = res.fleet.pinned[("p", 7)] = cold("p", spec(7))  # not a champion: never protected
        await use(res, champion, clock)
        await use(res, pinned, clock)
        other = await serve(res, "d")
        await use(res, other, clock)  # room for d: the pinned version goes, though used after the champion
        assert champion.resident and not pinned.resident and other.resident
        assert res.evictions == Counter({"budget": 1})
        clock.now += 100  # no traffic for longer than the window: the champions are plain LRU again
        await use(res, pinned, clock)
        assert not champion.resident and other.resident and pinned.resident

    run(scenario)


def test_a_version_with_a_request_in_flight_is_never_evicted() -> None:
    opener, clock = Opener(), Clock()

    async def scenario() -> None:
        res = residency(1, opener, clock, window_s=0)
        held, other = await serve(res, "held"), await serve(res, "other")
        await res.hold(held)  # in flight, not released
        await use(res, other, clock)
        assert held.resident and other.resident  # over the budget rather than under a running request
        assert res.budget.used["cpu"] == 2 * COST
        held.release()
        third = await serve(res, "third")
        await use(res, third, clock)
        assert not held.resident and not other.resident and third.resident

    run(scenario)


def test_a_failed_load_is_a_503_with_its_reason_and_is_tried_again_later() -> None:
    opener, clock = Opener(), Clock()
    opener.failing.add("bad")

    async def scenario() -> None:
        res = residency(2, opener, clock)
        bad = await serve(res, "bad")
        for _ in range(2):
            with pytest.raises(VersionUnavailable, match="could not be loaded: v1: the artifact's sha256") as error:
                await res.hold(bad)
            assert error.value.retry_after_s == 5.0
        assert opener.calls[("bad", 1)] == 1  # the second request did not retry within the window
        assert res.state_of(bad) == "failed" and bad.inflight == 0
        opener.failing.clear()
        clock.now += 6
        await res.hold(bad)
        assert bad.resident and res.state_of(bad) == "loaded" and res.loads == Counter({"failed": 1, "ok": 1})

    run(scenario)


def test_a_request_stops_waiting_at_its_deadline_and_the_load_goes_on_for_the_next() -> None:
    opener, clock = Opener(), Clock()
    opener.gate = threading.Event()

    async def scenario() -> None:
        res = residency(2, opener, clock)
        version = await serve(res, "slow")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await res.hold(version)
        assert res.state_of(version) == "loading" and version.inflight == 0
        opener.gate.set()  # type: ignore[union-attr]
        await res.hold(version)
        assert version.resident and version.inflight == 1

    run(scenario)
    assert opener.calls[("slow", 1)] == 1


def test_gpu_sessions_count_against_the_gpu_budget_only() -> None:
    opener, clock = Opener(provider=CUDA), Clock()

    async def scenario() -> None:
        res = residency(1, opener, clock, device="cuda", window_s=0)
        first, second = await serve(res, "first"), await serve(res, "second")
        await use(res, first, clock)
        assert res.budget.used.get("cuda") == COST and res.budget.used.get("cpu", 0) == 0
        await use(res, second, clock)
        assert not first.resident and second.resident
        assert res.memory() == [("cpu", 0, 0, 0), ("cuda", COST, COST, 1)]

    run(scenario)


def test_a_retired_version_stops_being_counted() -> None:
    opener, clock = Opener(), Clock()

    async def scenario() -> None:
        res = residency(2, opener, clock)
        version = await serve(res, "m")
        await use(res, version, clock)
        assert res.budget.used["cpu"] == COST
        await res.fleet.install("m", None)
        assert res.budget.used["cpu"] == 0 and res.report()["resident"] == []

    run(scenario)


def test_a_pinned_version_is_looked_up_once_kept_cold_and_unknown_ones_are_remembered() -> None:
    opener, clock = Opener(), Clock()
    asked: Counter[int] = Counter()

    def find_version(name: str, number: int) -> VersionSpec | None:
        asked[number] += 1
        if number == 9:
            raise ConnectionError("registry away")
        return spec(number) if number == 2 else None

    async def scenario() -> None:
        res = residency(2, opener, clock)
        res.find_version = find_version
        first = await res.pinned("m", 2, 1.0)
        assert first is not None and not first.resident and res.fleet.pinned[("m", 2)] is first
        assert await res.pinned("m", 2, 1.0) is first
        assert await res.pinned("m", 3, 1.0) is None and await res.pinned("m", 3, 1.0) is None
        clock.now += 6
        assert await res.pinned("m", 3, 1.0) is None
        with pytest.raises(VersionUnavailable, match="the registry did not answer"):
            await res.pinned("m", 9, 1.0)

    run(scenario)
    assert asked == Counter({2: 1, 3: 2, 9: 1})


def test_a_registry_slower_than_the_deadline_is_a_deadline_error() -> None:
    gate = threading.Event()

    def find_version(name: str, number: int) -> VersionSpec | None:
        gate.wait(10)
        return None

    async def scenario() -> None:
        res = residency(2, Opener(), Clock())
        res.find_version = find_version
        try:
            with pytest.raises(DeadlineExceeded):
                await res.pinned("m", 2, 0.05)
        finally:
            gate.set()

    run(scenario)
