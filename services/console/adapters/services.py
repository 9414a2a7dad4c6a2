"""The monitor, the evaluator and the gateways as the console reads them: plain GETs of their JSON (and
the gateways' Prometheus counters), each bounded by a timeout; one that does not answer is SourceDown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.console.domain import SourceDown

SHADOW_COUNTER = "ferry_gateway_shadow_comparisons"
MAX_METRICS_BYTES = 8 * 1024 * 1024


def get_json(http: httpx.Client, source: str, url: str) -> Any:
    """The JSON at ``url``; SourceDown when it cannot be had."""
    try:
        response = http.get(url)
    except httpx.HTTPError as error:
        raise SourceDown(source, f"{url}: {type(error).__name__}") from None
    if response.status_code != 200:
        raise SourceDown(source, f"{url} answered {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise SourceDown(source, f"{url} did not answer JSON") from None


class MonitorSource:
    """``/api/v1/alerts`` and ``/api/v1/rules`` of the monitor."""

    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        found = get_json(self._http, "monitor", f"{self._base}/api/v1/alerts")
        if not isinstance(found, dict):
            raise SourceDown("monitor", "its alerts are not what it documents")
        return {"active": list(found.get("active", [])), "recent": list(found.get("recent", []))}

    def rules(self) -> list[dict[str, Any]]:
        found = get_json(self._http, "monitor", f"{self._base}/api/v1/rules")
        return list(found.get("rules", [])) if isinstance(found, dict) else []


class EvaluatorSource:
    """``/api/v1/bakes`` of the evaluator: the canaries waiting for their bake to end."""

    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    def bakes(self) -> list[dict[str, Any]]:
        found = get_json(self._http, "evaluator", f"{self._base}/api/v1/bakes")
        return list(found) if isinstance(found, list) else []


@dataclass
class GatewayView:
    """What one gateway process serves of a model, and how its shadow answers agreed."""

    url: str
    model: dict[str, Any] | None
    """``/status``'s entry of the model (revision, champion, challenger, canary_weight, shadow), or None."""
    shadow: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Challenger version → (agreed, compared) since the gateway started."""

    def agreement(self, version: int) -> float | None:
        agreed, total = self.shadow.get(version, (0, 0))
        return agreed / total if total else None


def shadow_counts(text: str, model: str) -> dict[int, tuple[int, int]]:
    """Per version of ``model``: (agreed, compared), from the gateway's shadow-comparison counter."""
    counts: dict[int, list[int]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (SHADOW_COUNTER, f"{SHADOW_COUNTER}_total"):
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_total") or labels.get("model") != model or math.isnan(sample.value):
                continue
            try:
                version = int(labels.get("version", ""))
            except ValueError:
                continue
            tally = counts.setdefault(version, [0, 0])
            tally[1] += int(sample.value)
            if labels.get("agreed") == "true":
                tally[0] += int(sample.value)
    return {version: (agreed, total) for version, (agreed, total) in counts.items()}


class GatewaySource:
    """Each configured gateway's ``/status`` and shadow counters; one that is away is a notice of its own."""

    def __init__(self, http: httpx.Client, urls: list[str]) -> None:
        self._http = http
        self.urls = urls

    def views(self, model: str) -> tuple[list[GatewayView], list[str]]:
        """The views of the gateways that answered, and a notice per gateway that did not."""
        views, notices = [], []
        for url in self.urls:
            try:
                views.append(self._view(url, model))
            except SourceDown as error:
                notices.append(error.notice)
        return views, notices

    def _view(self, url: str, model: str) -> GatewayView:
        status = get_json(self._http, "gateway", f"{url}/status")
        models = status.get("models", {}) if isinstance(status, dict) else {}
        shadow: dict[int, tuple[int, int]] = {}
        try:
            response = self._http.get(f"{url}/metrics")
            if response.status_code == 200 and len(response.content) <= MAX_METRICS_BYTES:
                shadow = shadow_counts(response.text, model)
        except (httpx.HTTPError, ValueError):
            pass  # the split still shows; the agreement reads as unknown
        return GatewayView(url, models.get(model), shadow)
