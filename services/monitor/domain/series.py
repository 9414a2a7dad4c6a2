"""The bounded in-memory window of scraped series, and the two PromQL reads the rules need.

Semantics follow Prometheus so that the monitor and a real Prometheus fire the same alerts: a
series that a target's latest scrape did not return (or a target that is down) is stale and gone
from instant reads; ``increase`` extrapolates like PromQL's ``increase()`` and corrects counter resets.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

Labels = tuple[tuple[str, str], ...]
"""Sorted (name, value) pairs: a hashable label set."""


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True)
class Sample:
    """One sample of a scrape: metric name, labels (without job and instance) and value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    target: str
    points: deque[tuple[float, float]] = field(default_factory=deque)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(labels: Mapping[str, str], matchers: Mapping[str, str]) -> bool:
    """PromQL ``=~``: anchored, and a missing label is the empty string."""
    return all(_compiled(pattern).fullmatch(labels.get(name, "")) for name, pattern in matchers.items())


class SeriesStore:
    """Points per series for the last ``retention_s`` seconds; bounded in points and in series."""

    def __init__(self, *, retention_s: float, max_points: int = 2_000, max_series: int = 100_000) -> None:
        self.retention_s = retention_s
        self.max_points = max_points
        self.max_series = max_series
        self.refused = 0
        """Samples not stored because ``max_series`` was reached."""
        self._series: dict[tuple[str, str, Labels], Series] = {}
        self._by_name: dict[str, set[tuple[str, str, Labels]]] = {}
        self._last_scrape: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._series)

    def ingest(self, target: str, at: float, samples: Iterable[Sample]) -> None:
        """Record one scrape of ``target``; the target's series it did not return become stale."""
        self._last_scrape[target] = at
        for sample in samples:
            key = (target, sample.name, labels_of(sample.labels))
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= self.max_series:
                    self.refused += 1
                    continue
                series = Series(sample.name, dict(sample.labels), target)
                self._series[key] = series
                self._by_name.setdefault(sample.name, set()).add(key)
            series.points.append((at, sample.value))
            if len(series.points) > self.max_points:
                series.points.popleft()

    def prune(self, now: float) -> None:
        """Forget points older than the retention, and series left without points."""
        horizon = now - self.retention_s
        for key in [key for key, series in self._series.items() if self._trim(series, horizon)]:
            del self._series[key]
            self._by_name[key[1]].discard(key)

    @staticmethod
    def _trim(series: Series, horizon: float) -> bool:
        while series.points and series.points[0][0] < horizon:
            series.points.popleft()
        return not series.points

    def select(self, names: Iterable[str], matchers: Mapping[str, str]) -> Iterator[Series]:
        for name in names:
            for key in self._by_name.get(name, ()):
                series = self._series[key]
                if matches(series.labels, matchers):
                    yield series

    def latest(self, series: Series) -> float | None:
        """The instant value: None once the series is stale (absent from its target's latest scrape)."""
        if not series.points:
            return None
        at, value = series.points[-1]
        return value if at == self._last_scrape.get(series.target) else None

    def increase(self, series: Series, *, now: float, window_s: float) -> float | None:
        """PromQL's ``increase(series[window])`` at ``now``; None with fewer than two points in the window."""
        points = [point for point in series.points if now - window_s <= point[0] <= now]
        return extrapolated_increase(points, now - window_s, now)


def extrapolated_increase(points: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Prometheus's ``extrapolatedRate`` for counters, as ``increase()`` computes it (resets corrected)."""
    if len(points) < 2:
        return None
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    for (_, previous), (_, current) in zip(points, points[1:], strict=False):
        if current < previous:  # a counter reset: the counter restarted from zero
            result += previous
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    to_start, to_end = first_t - start, end - last_t
    average_step = sampled / (len(points) - 1)
    if result > 0 and first_v >= 0:
        # A counter does not extrapolate below zero: it started at most this long before the first point.
        to_start = min(to_start, sampled * (first_v / result))
    threshold = average_step * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_step / 2
    interval += to_end if to_end < threshold else average_step / 2
    return result * (interval / sampled)
