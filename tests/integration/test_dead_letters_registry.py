"""The operator's path through the real registry: a model.trained whose artifact is not in the store yet
is dead-lettered by the registry's handler; once the artifact is there, `ferry dlq replay` registers it,
once, however often it is replayed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support import wait_for
from test_registry_support import API_TOKEN, committed, publish, running, trained_event

from services.registry.adapters.orm import AppliedEvent, ModelVersion
from services.registry.bootstrap import Registry
from shared import dead_letters
from shared.cli import main

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def versions(registry: Registry) -> int:
    with registry.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(ModelVersion)) or 0)


def applied(registry: Registry) -> int:
    with registry.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(AppliedEvent)) or 0)


def test_a_model_trained_dead_lettered_for_a_missing_artifact_registers_once_replayed(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = registry.settings.ferry
    monkeypatch.setenv("FERRY_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("FERRY_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))  # no tokens file: FERRY_API_TOKEN is admin's
    monkeypatch.delenv("FERRY_REGISTRY_TOKENS_FILE", raising=False)
    monkeypatch.setenv("FERRY_API_TOKEN", API_TOKEN)
    content = uuid.uuid4().bytes * 8
    event = trained_event(content=content)
    sha256 = event.artifact.sha256
    own_key = event.artifact.model_copy(update={"uri": registry.artifacts.uri(sha256)})
    event = event.model_copy(update={"artifact": own_key})  # the store's key, but nothing there yet
    event_id = publish(settings, event)
    topic = settings.topic("model.trained")

    with running(registry):
        wait_for(lambda: len(dead_letters.read(settings, topic)) == 1, what="the dead letter", timeout_s=60)
        [letter] = dead_letters.read(settings, topic)
        assert letter.event_id == event_id and sha256 in (letter.header("ferry_dlq_reason") or "")
        assert versions(registry) == 0

        registry.artifacts.put_bytes(content)  # the cause is fixed
        for replays in (1, 2):  # the second replay finds the event applied: nothing changes
            assert main(["dlq", "replay", "model.trained", "--id", event_id]) == 0
            assert "as admin" in capsys.readouterr().out
            wait_for(
                lambda replays=replays: committed(registry.settings, "model.trained") == 1 + replays,
                what="the replay handled",
                timeout_s=60,
            )
            assert versions(registry) == 1 and applied(registry) == 1
    assert len(dead_letters.read(settings, topic)) == 1
