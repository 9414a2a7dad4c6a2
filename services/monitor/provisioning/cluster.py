"""The generated files of the Helm chart and the Compose file, by path under ``deploy/``.

A chart may only read files inside itself, so it gets its own copies: the Prometheus rules (a
PrometheusRule's spec is a rule file's ``groups``), the Grafana dashboard and the monitor's rules file.
Compose gets a Prometheus and an Alertmanager configuration that name its containers, not loopback. All are
written by ``ferry monitor export-grafana`` beside ``deploy/prometheus`` and checked for staleness the same way.
"""

from __future__ import annotations

from services.monitor.domain.rules import RuleSet
from services.monitor.provisioning import dashboard, prometheus
from services.monitor.provisioning.render import to_json, to_yaml
from shared.services import SERVICES

CHART_FILES = "helm/ferry/files"
COMPOSE_FILES = "compose"
COMPOSE_ALERTMANAGER = "alertmanager:9093"
COMPOSE_MONITOR_URL = "http://monitor:8082"
COMPOSE_WEBHOOK_TOKEN = "/run/secrets/alertmanager-webhook-token"
"""Where Compose mounts Alertmanager's token for the monitor's webhook (a Compose secret)."""


def chart_files(rules: RuleSet, rules_text: str) -> dict[str, str]:
    """The chart's copies; ``rules_text`` is the rules file itself, which the monitor's ConfigMap holds."""
    return {
        f"{CHART_FILES}/ferry.rules.yml": to_yaml(prometheus.alerting_rules(rules)),
        f"{CHART_FILES}/dashboards/ferry.json": to_json(dashboard.dashboard()),
        f"{CHART_FILES}/rules.yaml": rules_text,
    }


def compose_files() -> dict[str, str]:
    """Prometheus scraping each Compose service by its name, and Alertmanager calling the monitor's webhook."""
    targets = [prometheus.ScrapeTarget(s.name, f"{s.name}:{s.default_port}", s.metrics_path) for s in SERVICES]
    config = prometheus.prometheus_config(
        targets, rule_files=(f"/etc/prometheus/{prometheus.RULES_FILE}",), alertmanager=COMPOSE_ALERTMANAGER
    )
    return {
        f"{COMPOSE_FILES}/prometheus.yml": to_yaml(config),
        f"{COMPOSE_FILES}/alertmanager.yml": to_yaml(
            prometheus.alertmanager_config(COMPOSE_MONITOR_URL, credentials_file=COMPOSE_WEBHOOK_TOKEN)
        ),
    }


def cluster_files(rules: RuleSet, rules_text: str) -> dict[str, str]:
    """Every file of this module."""
    return chart_files(rules, rules_text) | compose_files()
