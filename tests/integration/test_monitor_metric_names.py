"""Every metric name in a generated expression (Prometheus rules, Grafana rules, the dashboard) is one
a service really exposes: the registry, the trainer and the monitor run here as processes, are made
to do the work that creates their series, and are scraped. The gateway's and the evaluator's names are
checked against their contract until they are installed; then test_monitor_gateway.py scrapes the gateway."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from monitor_support import FakeGateway, base_env, log_inputs, short_rules, start_monitor
from support import ServiceProcess, wait_for
from test_monitor_drift import register_and_promote

from services.monitor.provisioning import dashboard
from services.monitor.provisioning.promql import metric_names
from shared.events import FeedbackItem, InferenceFeedback, InferenceLogged, LoggedTensor, TrainingRequested
from shared.kafka import KafkaPublisher, make_producer
from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# HELPERS.md's contract for the services still being built (checked for real once they are installed).
CONTRACT = {
    "gateway": {
        "ferry_gateway_requests_total",
        "ferry_gateway_request_duration_seconds_bucket",
        "ferry_gateway_batch_size_bucket",
        "ferry_gateway_batch_size_sum",
        "ferry_gateway_batch_size_count",
        "ferry_gateway_queue_depth",
        "ferry_gateway_inflight",
        "ferry_gateway_shed_total",
        "ferry_gateway_rate_limited_total",
        "ferry_gateway_predictions_total",
        "ferry_gateway_shadow_comparisons_total",
    },
    "evaluator": {"ferry_evaluator_evaluations_total"},
}


def owner(name: str) -> str:
    for prefix, service_name in (
        ("ferry_gateway_", "gateway"),
        ("ferry_evaluator_", "evaluator"),
        ("ferry_training_", "trainer"),
        ("ferry_monitor_", "monitor"),
    ):
        if name.startswith(prefix):
            return service_name
    return "registry"  # its own metrics, and those of the consumer loop every service runs


def generated_names() -> set[str]:
    deploy = PROJECT_ROOT / "deploy"
    expressions = [
        rule["expr"]
        for rule in yaml.safe_load((deploy / "prometheus/ferry.rules.yml").read_text())["groups"][0]["rules"]
    ]
    grafana = yaml.safe_load((deploy / "grafana/provisioning/alerting/ferry-rules.yaml").read_text())
    expressions += [
        step["model"]["expr"]
        for rule in grafana["groups"][0]["rules"]
        for step in rule["data"]
        if "expr" in step["model"]
    ]
    expressions += dashboard.expressions()
    return {name for expression in expressions for name in metric_names(expression)} - {"up"}


def exposed(url: str) -> set[str]:
    text = httpx.get(url, timeout=10).text
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, flags=re.MULTILINE))


def test_every_generated_metric_name_is_exposed_by_its_service(
    ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path
) -> None:
    env = base_env(ferry_settings, tmp_path / "home")
    registry = ServiceProcess("registry", {**env, "FERRY_DATABASE_URL": fresh_database_url}, tmp_path / "registry.log")
    processes = [registry.start()]
    registry_url = registry.url
    gateway = FakeGateway(version="1")
    try:
        trainer = ServiceProcess("trainer", env, tmp_path / "trainer.log")
        processes.append(trainer.start())
        trainer_url = f"{trainer.url}/metrics"
        # Work that creates the series: a version and a decision (registry), a refused message (dead
        # letter), a request for an unknown dataset (a failed run), predictions (the monitor's drift), logged
        # inputs (its input drift).
        register_and_promote(ferry_settings, registry_url)
        producer = make_producer(ferry_settings)
        producer.send(ferry_settings.topic("model.trained"), b"not an event").get(timeout=30)
        producer.close()
        publisher = KafkaPublisher(ferry_settings, source="test")
        publisher.publish(TrainingRequested(model_name="digits", dataset="sklearn:absent"))
        log_inputs(publisher, np.ones((20, 4)), version=1)  # the monitor's input drift (version 1 has a reference)
        # A logged answer and its feedback: the monitor's online accuracy of digits v1.
        scores = LoggedTensor(name="probabilities", datatype="FP32", shape=[1, 2], data=[0.2, 0.8])
        publisher.publish(
            InferenceLogged(
                model_name="digits", request_id="r1", version=1, route="champion", inputs=[], outputs=[scores]
            )
        )
        publisher.publish(InferenceFeedback(model_name="digits", items=[FeedbackItem(request_id="r1", label=1)]))
        publisher.close()
        gateway.class_weights = {"0": 5, "1": 5}
        monitor, monitor_url = start_monitor(
            env,
            tmp_path,
            rules_file=str(short_rules(tmp_path / "rules.yaml")),
            targets=f"gateway={gateway.url}",  # the monitor's own gauges are read from its /metrics below
            registry_url=registry_url,
        )
        processes.append(monitor)
        scrape = {"registry": f"{registry_url}/metrics", "trainer": trainer_url, "monitor": f"{monitor_url}/metrics"}
        wanted = generated_names()
        by_owner = {name: {n for n in wanted if owner(n) == name} for name in ("registry", "trainer", "monitor")}
        for name, url in scrape.items():
            required = by_owner[name]
            wait_for(
                lambda url=url, required=required: required <= exposed(url),  # type: ignore[misc]
                timeout_s=120,
                what=f"{name} exposing {sorted(required - exposed(url))}",
            )
        for name in ("gateway", "evaluator"):  # their real processes are scraped in test_monitor_gateway.py
            assert {n for n in wanted if owner(n) == name} <= CONTRACT[name]
    finally:
        codes = [process.stop() for process in reversed(processes)]
        gateway.close()
    assert codes == [0] * len(codes)
