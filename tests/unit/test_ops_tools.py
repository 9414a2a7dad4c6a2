"""``ferry alerts``, ``logs`` and ``completion`` (``ferry predict``'s are in test_predict_cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from shared.ops_common import CommandError, Exit
from shared.ops_tools import alerts_table, log_files, run_completion, run_logs
from shared.settings import FerrySettings


def test_alerts_render_active_and_recent() -> None:
    alert: dict[str, Any] = {
        "rule": "error_ratio", "state": "firing", "labels": {"model": "digits", "version": "2"}, "value": 0.5,
        "threshold": 0.05, "action": "rollback", "active_at": "t0", "fired_at": "t1",
    }  # fmt: skip
    table = alerts_table({"active": [alert], "recent": [{**alert, "state": "resolved"}]}, recent=False)
    assert table.rows == [("firing", "error_ratio", "model=digits version=2", 0.5, 0.05, "rollback", "t1")]
    assert len(alerts_table({"active": [alert], "recent": [alert]}, recent=True).rows) == 2
    assert alerts_table({"active": []}, recent=False).title == "alerts: none active"


def test_logs_are_the_known_files_under_home(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    settings = FerrySettings(home=tmp_path)
    with pytest.raises(CommandError) as none:
        log_files(settings, "gateway")
    assert none.value.code == Exit.NOT_FOUND and "gateway.log" in none.value.message
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "gateway.log").write_text("one\ntwo\nthree\n")
    (tmp_path / "logs" / "registry.log").write_text("r\n")
    assert log_files(settings, None) == [tmp_path / "logs" / "gateway.log", tmp_path / "logs" / "registry.log"]
    assert run_logs(argparse.Namespace(service="gateway", lines=2, follow=False), settings) == 0
    assert capfd.readouterr().out == "two\nthree\n"


def test_completion_scripts_cover_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_completion(argparse.Namespace(shell="bash"), FerrySettings()) == Exit.OK
    script = capsys.readouterr().out
    assert "promote" in script and "rollback" in script and "completion" in script


def test_the_logs_of_a_service_are_those_of_every_replica_and_no_other(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("gateway", "gateway-2", "gateway-access", "gateway-2-access", "gateway-x", "registry-2"):
        (logs / f"{name}.log").write_text("line\n")
    settings = FerrySettings(home=tmp_path)
    assert log_files(settings, "gateway") == [logs / "gateway-2.log", logs / "gateway.log"]
    assert log_files(settings, "registry") == [logs / "registry-2.log"]
