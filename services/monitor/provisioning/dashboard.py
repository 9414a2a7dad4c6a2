"""The Ferry dashboard: requests, latency percentiles, errors, batch sizes, the canary split, prediction drift,
input drift per feature, consumer lag, training runs, the registry's outbox and the monitor's own view of its
targets."""

from __future__ import annotations

from typing import Any

from services.monitor.provisioning.grafana import DATASOURCE_UID

DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
MODEL = 'model=~"$model"'
VERSION = "{{model}} v{{version}}"


def _rate(metric: str, match: str = "", by: str = "model, version") -> str:
    """``sum by (...) (rate(metric{model=~"$model", ...}[$__rate_interval]))``"""
    matchers = ", ".join(part for part in (MODEL, match) if part)
    return f"sum by ({by}) (rate({metric}{{{matchers}}}[$__rate_interval]))"


def _quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, {_rate(histogram + '_bucket', by='le, model, version')})"


REQUESTS = "ferry_gateway_requests_total"
ROUTED = 'route=~"champion|canary"'
FAILED = 'outcome=~"error|timeout"'
AGREED = 'agreed="true"'
SHADOW = "ferry_gateway_shadow_comparisons_total"

# (title, unit, [(expr, legend)]) per panel, two panels a row.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests by version and route", "reqps", [(_rate(REQUESTS, by="model, version, route"), VERSION + " {{route}}")]),
    (
        "Latency percentiles",
        "s",
        [
            (_quantile(q, "ferry_gateway_request_duration_seconds"), f"p{round(q * 100)} " + VERSION)
            for q in (0.5, 0.9, 0.99)
        ],
    ),
    (
        "Error ratio",
        "percentunit",
        [
            (f"{_rate(REQUESTS, FAILED)} / {_rate(REQUESTS)}", VERSION),
        ],
    ),
    ("Requests by outcome", "reqps", [(_rate(REQUESTS, by="outcome"), "{{outcome}}")]),
    (
        "Batch size",
        "short",
        [
            (f"{_rate('ferry_gateway_batch_size_sum')} / {_rate('ferry_gateway_batch_size_count')}", "mean " + VERSION),
            (_quantile(0.9, "ferry_gateway_batch_size"), "p90 " + VERSION),
        ],
    ),
    (
        "Canary split (share of requests by route)",
        "percentunit",
        [
            (
                f"{_rate(REQUESTS, ROUTED, by='route')} / ignoring (route) group_left {_rate(REQUESTS, ROUTED, by='')}",
                "{{route}}",
            ),
        ],
    ),
    (
        "Shed and rate-limited",
        "reqps",
        [
            (_rate("ferry_gateway_shed_total", by="kind"), "shed {{kind}}"),
            (_rate("ferry_gateway_rate_limited_total", by="model"), "rate-limited {{model}}"),
        ],
    ),
    (
        "Queue depth and work in flight",
        "short",
        [
            ("sum(ferry_gateway_queue_depth)", "queue"),
            ("sum(ferry_gateway_inflight)", "in flight"),
        ],
    ),
    (
        "Prediction drift (PSI per version)",
        "short",
        [
            (f"max by (model, version) (ferry_monitor_drift_psi{{{MODEL}}})", VERSION),
        ],
    ),
    (
        "Input drift per feature (PSI against the training split)",
        "short",
        [
            (
                f"topk(10, max by (model, version, feature) (ferry_monitor_feature_drift_psi{{{MODEL}}}))",
                "{{model}} v{{version}} feature {{feature}}",
            ),
        ],
    ),
    (
        "Input drift score (share of features drifting)",
        "percentunit",
        [
            (f"max by (model, version) (ferry_monitor_input_drift_score{{{MODEL}}})", VERSION),
        ],
    ),
    (
        "Shadow agreement",
        "percentunit",
        [
            (f"{_rate(SHADOW, AGREED)} / {_rate(SHADOW)}", VERSION),
        ],
    ),
    ("Consumer lag by group", "short", [("sum by (group) (ferry_kafka_consumer_lag)", "{{group}}")]),
    (
        "Events consumed and dead-lettered",
        "ops",
        [
            ("sum by (group, outcome) (rate(ferry_events_consumed_total[$__rate_interval]))", "{{group}} {{outcome}}"),
            ("sum by (group) (rate(ferry_events_dead_lettered_total[$__rate_interval]))", "{{group}} dead-lettered"),
        ],
    ),
    ("Training runs", "short", [("sum by (outcome) (increase(ferry_training_runs_total[$__range]))", "{{outcome}}")]),
    (
        "Evaluations by decision",
        "short",
        [
            ("sum by (decision) (increase(ferry_evaluator_evaluations_total[$__range]))", "{{decision}}"),
        ],
    ),
    (
        "Registry outbox",
        "s",
        [
            ("max(ferry_registry_outbox_lag_seconds)", "oldest unpublished (s)"),
            ("max(ferry_registry_outbox_pending)", "pending rows"),
            ("max(ferry_registry_outbox_failed)", "parked rows"),
        ],
    ),
    ("Targets up", "short", [("up", "{{job}} {{instance}}")]),
]


def _panel(index: int, title: str, unit: str, queries: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for n, (expr, legend) in enumerate(queries)
        ],
    }


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (Grafana's schema version 39)."""
    return {
        "uid": "ferry-overview",
        "title": "Ferry",
        "tags": ["ferry"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [_variable("model", "label_values(ferry_gateway_requests_total, model)")]},
        "annotations": {"list": []},
        "panels": [_panel(index, *spec) for index, spec in enumerate(PANELS)],
    }


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard (for the tests: valid PromQL, real metric names)."""
    return [expr for _, _, queries in PANELS for expr, _ in queries]
