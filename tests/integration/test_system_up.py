"""`make up` / `ferry status` / `make down` for real: a whole system in its own home, on its own ports.

One system for the module (Kafka, PostgreSQL, SeaweedFS for its s3:// artifact store, supervisord and
every installed service): the same `ferry up` command as `make up`, run as a subprocess. It is killed
into and must come back; `ferry down` must leave no process behind. Only the conditions are waited
for, with generous deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port

from shared.local.stack import PROJECT_ROOT
from shared.local.system import settings_environment
from shared.settings import FerrySettings
from shared.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.s3]

SESSION_ROOT = PROJECT_ROOT / ".ferry-test" / str(os.getpid())


@dataclass
class System:
    home: Path
    env: dict[str, str]

    def ferry(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shared.cli", *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout_s, cwd=PROJECT_ROOT
        )

    def status(self) -> dict[str, dict[str, Any]]:
        return {part["name"]: part for part in json.loads(self.ferry("status", "--json").stdout)}

    def processes(self) -> list[str]:
        """Every process on the machine whose command line or environment names this home."""
        marker = str(self.home).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:200]!r}")
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return found


@pytest.fixture(scope="module")
def system(no_leftovers: None) -> Iterator[System]:
    home = (SESSION_ROOT / "up").absolute()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = FerrySettings(
        home=home,
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        topic_partitions=1,
        artifact_root="s3://ferry/artifacts",  # no endpoint of our own: the system starts SeaweedFS
    )
    (home / "settings.json").write_text(settings.model_dump_json())  # so a killed session's leftovers get stopped
    registry_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "OTEL_", "AWS_"))}
    env |= settings_environment(settings) | {
        "FERRY_REGISTRY_PORT": str(registry_port),
        "FERRY_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "FERRY_TRAINER_METRICS_PORT": str(free_port()),
        "FERRY_EVALUATOR_PORT": str(free_port()),
        "FERRY_GATEWAY_PORT": str(free_port()),
        "FERRY_MONITOR_PORT": str(free_port()),
        "FERRY_CONSOLE_PORT": str(free_port()),
        "FERRY_SUPERVISOR_START_SECS": "2",
    }
    running = System(home, env)
    try:
        up = running.ferry("up", timeout_s=480)
        assert up.returncode == 0, f"ferry up failed:\n{up.stdout}\n{up.stderr}"
        yield running
    finally:
        running.ferry("down", timeout_s=180)
        shutil.rmtree(home, ignore_errors=True)
        with contextlib.suppress(OSError):
            SESSION_ROOT.rmdir()  # when the session's own stack did not use it


def test_up_starts_the_stack_and_every_installed_service(system: System) -> None:
    parts = system.status()
    assert {"kafka", "postgres", "seaweedfs", "supervisord", "registry", "trainer"} <= set(parts)
    for name, part in parts.items():
        assert part["state"] == "running" and part["healthy"] and part["pid"], (name, part)
    assert parts["registry"]["port"] == int(system.env["FERRY_REGISTRY_PORT"])
    assert parts["kafka"]["port"] == int(system.env["FERRY_KAFKA_BOOTSTRAP"].rpartition(":")[2])
    for name in ("registry", "trainer", "supervisord", "kafka"):
        assert (system.home / "logs" / f"{name}.log").stat().st_size > 0
    table = system.ferry("stack", "status")  # the old spelling answers the same
    assert table.returncode == 0 and "registry" in table.stdout and "last restart" in table.stdout


def test_the_registry_takes_the_generated_token_and_no_well_known_one(system: System) -> None:
    tokens = system.home / "secrets" / "api-tokens"
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    [line] = tokens.read_text().splitlines()
    user, token = line.split()
    url = f"{system.env['FERRY_REGISTRY_URL']}/api/v1/models/nope/deployment"
    body = {"action": "promote", "version": 1, "reason": "test"}

    def post(secret: str) -> int:
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code

    assert user == "operator"
    assert post("ferry-demo-token") == 403
    assert post(token) not in (401, 403)  # past authentication: the model is unknown


def test_the_monitor_takes_the_generated_webhook_tokens_and_nothing_else(system: System) -> None:
    secrets = system.home / "secrets"
    tokens = dict(line.split() for line in (secrets / "webhook-tokens").read_text().splitlines())
    assert set(tokens) == {"alertmanager", "grafana"}
    assert (secrets / "alertmanager-webhook-token").read_text().strip() == tokens["alertmanager"]
    url = f"http://127.0.0.1:{system.env['FERRY_MONITOR_PORT']}/api/v1/alertmanager-webhook"

    def post(**credential: Any) -> int:
        return httpx.post(url, json={"alerts": []}, timeout=10, **credential).status_code

    assert post() == 401
    assert post(headers={"Authorization": "Bearer ferry-demo-token"}) == 401
    assert post(headers={"Authorization": f"Bearer {tokens['alertmanager']}"}) == 200
    assert post(auth=("grafana", tokens["grafana"])) == 200


def test_the_services_reach_the_local_s3_store_with_the_generated_key_pair(system: System) -> None:
    credentials = system.home / "secrets" / "s3-credentials"
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"
    pair = dict(line.split("=", 1) for line in credentials.read_text().splitlines())
    registry = system.status()["registry"]["pid"]
    environ = dict(
        item.split(b"=", 1) for item in Path(f"/proc/{registry}/environ").read_bytes().split(b"\0") if b"=" in item
    )
    endpoint = f"http://127.0.0.1:{system.status()['seaweedfs']['port']}"
    assert environ[b"FERRY_S3_ENDPOINT_URL"].decode() == endpoint
    assert environ[b"AWS_ACCESS_KEY_ID"].decode() == pair["AWS_ACCESS_KEY_ID"]
    assert environ[b"AWS_SECRET_ACCESS_KEY"].decode() == pair["AWS_SECRET_ACCESS_KEY"]
    assert httpx.get(f"{endpoint}/ferry", timeout=10).status_code == 403  # no anonymous access


def test_a_killed_service_is_restarted_by_the_supervisor(system: System) -> None:
    before = system.status()["registry"]
    os.kill(before["pid"], signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        registry = system.status()["registry"]
        return registry if registry["pid"] not in (None, before["pid"]) and registry["healthy"] else None

    after = wait_for(back, what="the registry restarted and healthy", timeout_s=180, max_s=3)
    assert after["state"] == "running" and after["restarts"] == before["restarts"] + 1
    assert after["last_start"] > before["last_start"]
    assert system.ferry("status").returncode == 0


def test_up_after_supervisord_was_killed_replaces_it_and_its_orphans(system: System) -> None:
    before = system.status()
    os.kill(before["supervisord"]["pid"], signal.SIGKILL)
    orphan = before["registry"]["pid"]
    assert Path(f"/proc/{orphan}").exists()  # the services outlive their daemon
    up = system.ferry("up", timeout_s=480)
    assert up.returncode == 0, f"ferry up failed:\n{up.stdout}\n{up.stderr}"
    after = system.status()
    assert after["supervisord"]["pid"] != before["supervisord"]["pid"]
    assert after["registry"]["pid"] != orphan and after["registry"]["healthy"]
    assert after["kafka"]["pid"] == before["kafka"]["pid"]  # the stack was left alone
    assert not Path(f"/proc/{orphan}").exists() or b"zombie" in Path(f"/proc/{orphan}/status").read_bytes().lower()


def test_down_stops_everything_and_leaves_no_process(system: System) -> None:
    pids = [part["pid"] for part in system.status().values() if part["pid"]]
    assert len(pids) >= 5 and system.processes()
    down = system.ferry("down", timeout_s=180)
    assert down.returncode == 0 and "supervisord and its services, kafka, postgres, seaweedfs" in down.stdout
    parts = system.status()
    assert all(part["pid"] is None for part in parts.values()), parts
    assert system.ferry("status").returncode == 1
    assert system.processes() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
