"""``ferry monitor export-grafana`` writes Grafana and Prometheus provisioning from the rules file;
``ferry monitor alerts`` shows what a running monitor has active."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.ops_tools import add_alerts_arguments, show_alerts
from shared.settings import FerrySettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace, FerrySettings], int]]:
    """The monitor's contribution to the ``ferry`` command (entry point ``ferry.commands``)."""
    parser = subparsers.add_parser("monitor", help="alert rules: Grafana/Prometheus provisioning, active alerts")
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export-grafana",
        help="write deploy/grafana/, deploy/prometheus/, the chart's and Compose's files from the rules",
    )
    export.add_argument("--rules", type=Path, default=PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml")
    export.add_argument("--out", type=Path, default=PROJECT_ROOT / "deploy", help="gets grafana/ and prometheus/")
    export.add_argument("--prometheus-url", default="http://127.0.0.1:9090", help="Grafana's datasource URL")
    export.add_argument("--monitor-url", default="http://127.0.0.1:8082", help="where webhooks reach the monitor")
    export.add_argument(
        "--alertmanager-credentials-file",
        default=None,
        help="file of Alertmanager's bearer token for the monitor's webhook, relative to alertmanager.yml "
        "(default: ../../.ferry/secrets/alertmanager-webhook-token, which `make up` writes)",
    )
    export.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are out of date")
    add_alerts_arguments(actions.add_parser("alerts", help="the active alerts of a running monitor, as 'ferry alerts'"))
    return {"monitor.export-grafana": run_export, "monitor.alerts": run_alerts}


def run_export(args: argparse.Namespace, settings: FerrySettings | None = None) -> int:
    from dataclasses import replace

    from services.monitor.adapters.rules_file import RulesFileError, read_rules
    from services.monitor.provisioning.cluster import cluster_files
    from services.monitor.provisioning.export import ExportOptions, generated_files, stale_files, write_files

    try:
        rules = read_rules(args.rules)
    except RulesFileError as error:
        print(error, file=sys.stderr)
        return 2
    options = ExportOptions(prometheus_url=args.prometheus_url, monitor_url=args.monitor_url)
    if args.alertmanager_credentials_file:
        options = replace(options, alertmanager_credentials_file=args.alertmanager_credentials_file)
    # The chart's and Compose's copies too (read_rules has just read the file, so it is readable).
    files = generated_files(rules, options) | cluster_files(rules, args.rules.read_text())
    if args.check:
        stale = stale_files(files, args.out)
        for relative in stale:
            print(f"out of date: {args.out / relative}", file=sys.stderr)
        if stale:
            print("run `ferry monitor export-grafana` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in write_files(files, args.out):
        print(f"wrote {path}")
    return 0


def run_alerts(args: argparse.Namespace, settings: FerrySettings | None = None) -> int:
    """The same code as ``ferry alerts``."""
    return show_alerts(args.url, as_json=args.json, recent=args.recent)
