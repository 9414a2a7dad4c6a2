"""``ferry demo``: the whole loop on one machine.

Starts the stack (Kafka + PostgreSQL), proves a Kafka round trip, starts every service that is
installed, publishes a training request and follows it until the registry holds the new version.
Services keep running only for the demo; their logs are under ``<home>/logs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from argparse import Namespace
from dataclasses import dataclass, field

from shared.services import installed_services
from shared.settings import FerrySettings


@dataclass
class ServiceProcesses:
    """The demo's service processes, each logging to <home>/logs/<name>.log."""

    settings: FerrySettings
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        log_file = self.settings.home.absolute() / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=os.environ.copy(),
            )  # fmt: skip
        print(f"  started {name:9} pid {self.running[name].pid}, log {log_file}")

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"service {name} exited with {process.returncode}; see its log")

    def stop(self) -> None:
        for process in self.running.values():
            process.terminate()
        for name, process in self.running.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop on SIGTERM; killing it")
                process.kill()


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post_json(url: str, body: dict[str, object], token: str) -> object:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def run_demo(settings: FerrySettings, *, keep_running: bool = False) -> int:
    """The whole loop; returns the process exit code."""
    from shared.cli import main as ferry
    from shared.stack import Stack

    # The demo's registry accepts writes with this token unless the user brought one.
    os.environ.setdefault("FERRY_API_TOKEN", "ferry-demo-token")
    print("1. the stack: Kafka (KRaft) and PostgreSQL")
    Stack(settings).up()
    print("2. a Kafka round trip through the CloudEvents envelope")
    if ferry(["roundtrip"]) != 0:
        return 1
    services = [spec.name for spec in installed_services()]
    processes = ServiceProcesses(settings)
    try:
        print(f"3. the services: {', '.join(services) or 'none installed yet'}")
        for name in services:
            processes.start(name)
        return _train_and_inspect(settings, processes, services)
    finally:
        if not keep_running:
            processes.stop()
            print("services stopped; the stack keeps running (make down stops it)")


def _train_and_inspect(settings: FerrySettings, processes: ServiceProcesses, services: list[str]) -> int:
    from shared.cli import main as ferry

    if not {"registry", "trainer"} <= set(services):
        print("the registry and trainer are not installed: the loop stops here")
        return 0
    registry = os.environ.get("FERRY_REGISTRY_URL", "http://127.0.0.1:8081")
    wait_http(f"{registry}/healthz")
    processes.check_alive()
    print("4. ferry train --model digits --dataset sklearn:digits --wait")
    code = ferry(["train", "--model", "digits", "--dataset", "sklearn:digits", "--epochs", "40", "--wait"])
    if code != 0:
        return code
    print("5. what the registry now knows (newest version)")
    page = get_json(f"{registry}/api/v1/models/digits/versions?limit=1")
    newest = page["items"][0]  # type: ignore[index]
    print(json.dumps({key: newest[key] for key in ("version", "status", "artifact", "metrics")}, indent=2))
    if "evaluator" not in services:
        print(f"6. no evaluator yet: promote version {newest['version']} by hand through the registry's API")
        body = {"action": "promote", "version": newest["version"], "stage": "champion", "reason": "ferry demo"}
        post_json(f"{registry}/api/v1/models/digits/deployment", body, settings_token())
    print(json.dumps(get_json(f"{registry}/api/v1/models/digits/deployment"), indent=2))
    history = get_json(f"{registry}/api/v1/models/digits/deployment/history?limit=3")
    print(json.dumps(history["items"][:1], indent=2))  # type: ignore[index]
    return 0


def settings_token() -> str:
    """The registry's write token: FERRY_API_TOKEN, set by run_demo when the user has none."""
    return os.environ["FERRY_API_TOKEN"]


def demo_command(args: Namespace, settings: FerrySettings) -> int:
    return run_demo(settings, keep_running=args.keep_running)
