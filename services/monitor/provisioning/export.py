"""Every generated file, by path under ``deploy/``: Grafana provisioning and the Prometheus side.

Generation depends on the rules and these options only (never on the environment), so the committed
files can be checked for staleness: regenerate and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.monitor.domain.rules import RuleSet
from services.monitor.provisioning import dashboard, grafana, prometheus
from services.monitor.provisioning.render import to_json, to_yaml
from shared.services import SERVICES


@dataclass(frozen=True)
class ExportOptions:
    prometheus_url: str = "http://127.0.0.1:9090"
    monitor_url: str = "http://127.0.0.1:8082"
    alertmanager: str = "127.0.0.1:9095"
    """Not Alertmanager's default 9093: that is the local Kafka's controller port."""
    scrape_interval: str = "5s"
    dashboards_path: str = "$FERRY_ROOT/deploy/grafana/dashboards"
    alertmanager_credentials_file: str = "../../.ferry/secrets/alertmanager-webhook-token"
    """Alertmanager's bearer token for the monitor's webhook, relative to alertmanager.yml: the one
    `make up` writes under the default FERRY_HOME."""
    grafana_token_variable: str = "FERRY_GRAFANA_WEBHOOK_TOKEN"
    """The environment variable Grafana reads its token for the monitor's webhook from."""


def scrape_targets() -> list[prometheus.ScrapeTarget]:
    """Every service of the table at its default port: the generated files do not depend on the environment."""
    return [prometheus.ScrapeTarget(s.name, f"127.0.0.1:{s.default_port}", s.metrics_path) for s in SERVICES]


def generated_files(rules: RuleSet, options: ExportOptions = ExportOptions()) -> dict[str, str]:
    interval = options.scrape_interval
    return {
        "grafana/provisioning/datasources/ferry.yaml": to_yaml(
            grafana.datasource(options.prometheus_url, scrape_interval=interval)
        ),
        "grafana/provisioning/dashboards/ferry.yaml": to_yaml(grafana.dashboard_provider(options.dashboards_path)),
        "grafana/provisioning/alerting/ferry-rules.yaml": to_yaml(
            grafana.alert_rules(rules, interval=grafana.evaluation_interval(rules))
        ),
        "grafana/provisioning/alerting/ferry-contact-points.yaml": to_yaml(
            grafana.contact_points(options.monitor_url, token_variable=options.grafana_token_variable)
        ),
        "grafana/dashboards/ferry.json": to_json(dashboard.dashboard()),
        "prometheus/prometheus.yml": to_yaml(
            prometheus.prometheus_config(
                scrape_targets(),
                scrape_interval=interval,
                evaluation_interval=interval,
                alertmanager=options.alertmanager,
            )
        ),
        f"prometheus/{prometheus.RULES_FILE}": to_yaml(prometheus.alerting_rules(rules)),
        f"prometheus/{prometheus.RULE_TESTS_FILE}": to_yaml(prometheus.rule_unit_tests(rules)),
        "prometheus/alertmanager.yml": to_yaml(
            prometheus.alertmanager_config(options.monitor_url, credentials_file=options.alertmanager_credentials_file)
        ),
    }


def write_files(files: dict[str, str], root: Path) -> list[Path]:
    written = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_files(files: dict[str, str], root: Path) -> list[str]:
    """The generated files that are missing under ``root`` or differ from what would be written now."""
    stale = []
    for relative, text in files.items():
        path = root / relative
        if not path.is_file() or path.read_text() != text:
            stale.append(relative)
    return stale
