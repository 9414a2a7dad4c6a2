"""How many versions fit in a gateway process, free of I/O: what a loaded version is estimated to cost,
the memory budget of each device, and which resident versions go first when a load needs room.

The estimate is the artifact's size times :data:`WEIGHT_FACTOR` plus a fixed cost per session. It is known
before a load (so room is made first, not after the memory is taken) and it does not depend on what other
loads run at the same time, which a resident-set delta measured around the session's creation does (loads
run in parallel, and the allocator keeps what it freed). ``bench/gateway_many_models.py`` compares the
sum of the estimates with the process's real resident memory.

Eviction order: least recently used first, in two tiers. First every version that is neither the champion
nor the challenger of a model with traffic in the last ``protect_window_s`` (a previous champion kept for
fallback, a pinned version, a model nobody asked for lately); then, only when that is not enough, the
protected ones, least recently used first. A version with requests in flight or with a load under way is
never chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

DeviceName = Literal["cpu", "cuda"]
WEIGHT_FACTOR = 1.5
"""ONNX Runtime holds the initializers once, and pre-packed copies of some; 1.5 covers both for MLPs."""
EvictionReason = Literal["budget", "protected_budget"]


def estimate_bytes(artifact_bytes: int, session_overhead_bytes: int) -> int:
    """What a loaded version is counted as: its weights (and their pre-packed copies), plus the session."""
    return int(artifact_bytes * WEIGHT_FACTOR) + session_overhead_bytes


@dataclass(frozen=True)
class Candidate:
    """A resident version as eviction sees it."""

    key: object
    device: DeviceName
    estimated_bytes: int
    last_used: float
    protected: bool
    busy: bool
    """Requests in flight or a load under way: never evicted."""


@dataclass
class MemoryBudget:
    """Bytes allowed and bytes counted, per device; a limit of 0 means no limit on that device."""

    limits: dict[DeviceName, int]
    used: dict[DeviceName, int] = field(default_factory=dict)

    def limit(self, device: DeviceName) -> int:
        return self.limits.get(device, 0)

    def add(self, device: DeviceName, amount: int) -> None:
        self.used[device] = self.used.get(device, 0) + amount

    def remove(self, device: DeviceName, amount: int) -> None:
        self.used[device] = max(0, self.used.get(device, 0) - amount)

    def shortfall(self, device: DeviceName, wanted: int) -> int:
        """Bytes to free on ``device`` before ``wanted`` more fit (0 when they fit or there is no limit)."""
        limit = self.limit(device)
        if limit <= 0:
            return 0
        return max(0, self.used.get(device, 0) + wanted - limit)


def victims(candidates: Iterable[Candidate], device: DeviceName, needed: int) -> list[tuple[Candidate, EvictionReason]]:
    """The versions to unload, in order, to free ``needed`` bytes on ``device``: unprotected ones least
    recently used first, then protected ones; fewer than needed when no more can go (see the module)."""
    if needed <= 0:
        return []
    eligible = [c for c in candidates if c.device == device and not c.busy]
    ordered = sorted(eligible, key=lambda c: (c.protected, c.last_used))
    chosen: list[tuple[Candidate, EvictionReason]] = []
    freed = 0
    for candidate in ordered:
        if freed >= needed:
            break
        chosen.append((candidate, "protected_budget" if candidate.protected else "budget"))
        freed += candidate.estimated_bytes
    return chosen


def warm_order(sizes: Sequence[tuple[object, int]], room: int) -> list[object]:
    """Which versions to load at start without evicting anything: in the given order, while they fit in
    ``room`` bytes (``room`` <= 0: no limit, all of them)."""
    if room <= 0:
        return [key for key, _ in sizes]
    chosen, total = [], 0
    for key, size in sizes:
        if total + size > room:
            break
        chosen.append(key)
        total += size
    return chosen
