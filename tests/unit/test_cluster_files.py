"""The chart's and Compose's generated files are what deploy/alerts/rules.yaml generates now."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from services.monitor.adapters.rules_file import read_rules
from services.monitor.cli import run_export
from services.monitor.provisioning.cluster import CHART_FILES, cluster_files
from services.monitor.provisioning.export import stale_files

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "alerts" / "rules.yaml"


def test_the_committed_chart_and_compose_files_are_fresh() -> None:
    """Regenerating changes nothing: run `ferry monitor export-grafana` after editing the rules."""
    files = cluster_files(read_rules(RULES), RULES.read_text())
    assert stale_files(files, ROOT / "deploy") == []
    # The chart's Prometheus rules are the very file Prometheus loads outside the cluster.
    chart_rules = ROOT / "deploy" / CHART_FILES / "ferry.rules.yml"
    assert chart_rules.read_text() == (ROOT / "deploy" / "prometheus" / "ferry.rules.yml").read_text()


def test_the_export_check_sees_a_stale_chart_file(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("secrets"))
    args = argparse.Namespace(
        rules=RULES,
        out=tmp_path / "deploy",
        prometheus_url="http://127.0.0.1:9090",
        monitor_url="http://127.0.0.1:8082",
        alertmanager_credentials_file=None,
        check=True,
    )
    assert run_export(args) == 0
    (tmp_path / "deploy" / CHART_FILES / "rules.yaml").write_text("rules: []\n")
    assert run_export(args) == 1
