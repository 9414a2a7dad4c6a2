"""The whole process, `python -m services.registry`: killed with SIGKILL mid-stream it loses nothing,
and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_registry_support import API_TOKEN, TopicReader, publish, trained_event, wait_for

from services.registry.settings import RegistrySettings
from shared.stack import PROJECT_ROOT

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """One registry process, started with the environment a deployment would give it."""

    def __init__(self, settings: RegistrySettings, log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ferry = settings.ferry
        self.env = {
            **os.environ, "FERRY_HOME": str(log_file.parent / "home"), "FERRY_DATABASE_URL": str(ferry.database_url),
            "FERRY_KAFKA_BOOTSTRAP": ferry.kafka_bootstrap, "FERRY_TOPIC_PREFIX": ferry.topic_prefix,
            "FERRY_ARTIFACT_ROOT": str(ferry.artifact_root), "FERRY_API_TOKEN": API_TOKEN,
            "FERRY_REGISTRY_PORT": str(self.port), "FERRY_REGISTRY_CONSUMER_GROUP": settings.consumer_group,
            "FERRY_REGISTRY_RELAY_IDLE_S": "0.05", "FERRY_REGISTRY_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        }  # fmt: skip
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "services.registry"], cwd=PROJECT_ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(self._ready, timeout_s=60, what=f"the registry on {self.url} (log: {self.log_file})")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the registry exited with {self.process.returncode}:\n{self.log_file.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def latest_version(self) -> int:
        response = httpx.get(f"{self.url}/api/v1/models/digits", timeout=5)
        return int(response.json()["latest_version"]) if response.status_code == 200 else 0

    def stop(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)


@pytest.fixture
def service(registry_settings: RegistrySettings, tmp_path: Path) -> Iterator[Callable[[], Service]]:
    started: list[Service] = []

    def start() -> Service:
        instance = Service(registry_settings, tmp_path / "registry.log")
        instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        if instance.process and instance.process.poll() is None:
            instance.process.kill()
            instance.process.wait(10)


def test_a_killed_registry_loses_nothing_and_a_terminated_one_stops_cleanly(
    service: Callable[[], Service],
    registry_settings: RegistrySettings,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    total = 30
    first = service()
    registered = topic_reader("model.registered")
    publish(registry_settings.ferry, *(trained_event() for _ in range(total)))
    wait_for(lambda: first.latest_version() >= 3, what="the first versions")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-stream: consumed, committed, maybe unpublished

    second = service()
    wait_for(lambda: second.latest_version() == total, what=f"{total} versions after the restart")
    event_ids: dict[int, set[str]] = defaultdict(set)
    for item in registered.read(total):
        event_ids[item.event.version].add(item.meta.event_id)  # type: ignore[attr-defined]
    assert sorted(event_ids) == list(range(1, total + 1))  # every version announced
    assert all(len(ids) == 1 for ids in event_ids.values())  # a republished row keeps its event id

    promoted = httpx.post(f"{second.url}/api/v1/models/digits/deployment", timeout=10,
                          json={"action": "promote", "version": total, "reason": "e2e"},
                          headers={"Authorization": f"Bearer {API_TOKEN}", "X-Ferry-User": "e2e"})  # fmt: skip
    assert promoted.status_code == 200 and promoted.json()["champion"] == total
    changed = topic_reader("deployment.changed").read(1)
    assert changed[0].event.champion.version == total  # type: ignore[attr-defined]
    assert second.stop(signal.SIGTERM) == 0
