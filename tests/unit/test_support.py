"""The tests' own service-process helper: a service that exits while a test waits on it fails the test at once,
with its exit status and its log, instead of leaving the test to wait out its deadline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import ServiceProcess


def test_a_service_that_exits_while_awaited_fails_the_wait_with_its_status_and_log(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none",
        "FERRY_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "FERRY_API_TOKEN": "ferry-demo-token",  # the registry refuses a placeholder token at start-up: status 2
    }
    registry = ServiceProcess("registry", env, tmp_path / "registry.log")
    assert registry.port and registry.url == f"http://127.0.0.1:{registry.port}"  # a free port of its own
    with pytest.raises(pytest.fail.Exception, match="registry is not running \\(exit status 2\\)") as failed:
        registry.start(timeout_s=600)  # the failure says why it ended the wait: not a timeout
    assert "refusing to start" in str(failed.value)  # the log comes with the failure
    assert registry.stop() == 2 and not registry.running
