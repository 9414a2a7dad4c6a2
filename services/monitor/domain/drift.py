"""Population stability index of a live class distribution against a reference distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping


def shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Counts (or weights) as fractions of their total; empty when the total is not positive."""
    total = sum(value for value in counts.values() if value > 0)
    if total <= 0:
        return {}
    return {key: max(value, 0.0) / total for key, value in counts.items()}


def psi(live: Mapping[str, float], reference: Mapping[str, float], *, epsilon: float = 1e-4) -> float:
    """PSI = Σ (live_i − ref_i) · ln(live_i / ref_i) over every class of either side.

    Both sides are shares; a class missing on one side counts as ``epsilon`` there (so a class the
    reference never saw weighs heavily instead of dividing by zero). 0 means the same distribution;
    the rule of thumb: < 0.1 stable, 0.1–0.2 moderate shift, > 0.2 a significant shift.
    """
    total = 0.0
    for key in sorted(set(live) | set(reference)):
        actual = max(live.get(key, 0.0), epsilon)
        expected = max(reference.get(key, 0.0), epsilon)
        total += (actual - expected) * math.log(actual / expected)
    return total
