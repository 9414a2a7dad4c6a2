"""The end-to-end tests' environment: what a user would export, so every service and the CLI agree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import free_port

from shared.settings import FerrySettings


@pytest.fixture
def user_env(ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path) -> dict[str, str]:
    """The ``FERRY_*`` settings of this test's stack, a registry port of its own, the trainer's metrics off."""
    port = free_port()
    return {
        **os.environ,
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_KAFKA_BOOTSTRAP": ferry_settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": ferry_settings.topic_prefix,
        "FERRY_DATABASE_URL": fresh_database_url,
        "FERRY_ARTIFACT_ROOT": ferry_settings.resolved_artifact_root,
        "FERRY_REGISTRY_PORT": str(port),
        "FERRY_REGISTRY_URL": f"http://127.0.0.1:{port}",
        "FERRY_TRAINER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
