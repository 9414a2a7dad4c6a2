"""Scrapes Prometheus text from a target's ``/metrics`` with httpx and ``prometheus_client.parser``."""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.monitor.domain.series import Sample

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """A scrape target: ``job`` names the service (Prometheus's job label), ``url`` its metrics endpoint."""

    job: str
    url: str

    @property
    def key(self) -> str:
        """One process: a job may have several (replicas), each at its own URL."""
        return f"{self.job} {self.url}"

    @property
    def instance(self) -> str:
        """Prometheus's ``instance`` label: host:port of the URL."""
        parts = urlsplit(self.url)
        default = 443 if parts.scheme == "https" else 80
        return f"{parts.hostname}:{parts.port or default}"


@dataclass
class ScrapeResult:
    target: Target
    ok: bool
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0


def parse_exposition(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (NaN samples dropped, as they carry no value to alert on)."""
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not math.isnan(sample.value):
                samples.append(Sample(sample.name, dict(sample.labels), float(sample.value)))
    return samples


class HttpScraper:
    """Scrapes all targets at once (one thread each), each bounded by ``timeout_s``."""

    def __init__(self, *, timeout_s: float = 2.0, client: httpx.Client | None = None) -> None:
        self._timeout_s = timeout_s
        self._client = client or httpx.Client(timeout=timeout_s, headers={"Accept": "text/plain;version=0.0.4"})
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="scrape")

    def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]:
        return list(self._pool.map(self.scrape, targets))

    def scrape(self, target: Target) -> ScrapeResult:
        started = time.perf_counter()
        try:
            response = self._client.get(target.url)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            if len(response.content) > MAX_BODY_BYTES:
                raise ValueError(f"exposition larger than {MAX_BODY_BYTES} bytes")
            try:
                samples = parse_exposition(response.text)
            except ValueError:
                raise ValueError("the body is not Prometheus text exposition") from None
        except (httpx.HTTPError, ValueError) as error:
            # The reason, never the body: a target's content is not echoed into logs or alerts.
            reason = f"{type(error).__name__}: {error}"[:300]
            return ScrapeResult(target, ok=False, error=reason, duration_s=time.perf_counter() - started)
        return ScrapeResult(target, ok=True, samples=samples, duration_s=time.perf_counter() - started)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
