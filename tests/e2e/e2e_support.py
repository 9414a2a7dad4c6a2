"""Service processes for the end-to-end tests, and the `ferry` CLI as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from support import wait_for


class Processes:
    """Service processes logging to the test's folder (``<name>.log``)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, **extra: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env={**self.env, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running[name] = process
        return process

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs.glob("*.log"))

    def wait_http(self, url: str, timeout_s: float = 90) -> None:
        """Wait until ``url`` answers 200; fail at once, with the logs, if a service exits meanwhile."""

        def ready() -> bool:
            for name, process in self.running.items():
                assert process.poll() is None, f"{name} exited early:\n{self.tail()}"
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout_s=timeout_s, what=f"{url} to be ready", detail=self.tail)

    def until(self, what: str, probe: Any, timeout_s: float = 90) -> Any:
        """``probe()``'s first truthy value; fail with the services' logs after ``timeout_s``."""
        return wait_for(probe, timeout_s=timeout_s, what=what, detail=self.tail)

    def stop(self, allowed: Iterable[int] = (0,)) -> None:
        """SIGTERM every service still running; each must exit with an allowed code."""
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        allowed = set(allowed)
        for name, process in self.running.items():
            code = process.wait(timeout=60)
            assert code in allowed, f"{name} exited with {code}:\n{self.tail()}"


def ferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, as a user with ``env`` exported runs it."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
