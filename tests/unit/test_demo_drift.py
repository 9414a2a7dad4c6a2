"""``ferry demo --drift``'s set-up, without the system: the rules it runs on and the timings it sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from shared.local.demo_drift import DRIFT_RULES, WINDOW_ROWS, drift_rules, set_drift_timings
from shared.settings import FerrySettings


def test_the_drift_demo_quickens_the_two_retrain_rules_and_keeps_every_other(tmp_path: Path) -> None:
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/alerts/rules.yaml").read_text())
    written = yaml.safe_load(Path(drift_rules(FerrySettings(home=tmp_path))).read_text())
    changed = {rule["name"]: rule for rule in written["rules"] if rule not in shipped["rules"]}
    assert set(changed) == set(DRIFT_RULES) == {"InputDrift", "OnlineAccuracyBelowEvaluation"}
    assert all(rule["action"] == "retrain" and rule["for"] == "5s" for rule in changed.values())


def test_the_drift_demo_logs_every_answer_unless_the_user_said_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "FERRY_GATEWAY_LOG_SAMPLE",
        "FERRY_MONITOR_INPUT_WINDOW_ROWS",
        "FERRY_MONITOR_RULES_FILE",
        "FERRY_EVALUATOR_MARGIN",
    ):
        monkeypatch.setenv(name, "recorded")  # so that the test's end restores each as it was
        monkeypatch.delenv(name)
    monkeypatch.setenv("FERRY_EVALUATOR_RETRAIN_MIN_ROWS", "400")
    set_drift_timings(FerrySettings(home=tmp_path))
    assert os.environ["FERRY_GATEWAY_LOG_SAMPLE"] == "1.0"
    assert os.environ["FERRY_MONITOR_INPUT_WINDOW_ROWS"] == str(WINDOW_ROWS)
    assert os.environ["FERRY_EVALUATOR_MARGIN"] == "0.05"
    assert os.environ["FERRY_EVALUATOR_RETRAIN_MIN_ROWS"] == "400"  # the user's own value wins
