"""Service processes for the end-to-end tests, and the `ferry` CLI as a user runs it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from support import ServiceProcess, wait_for


class Processes:
    """Service processes sharing one environment, each logging to ``<logs>/<name>.log``; the last one started
    under a name is the one that name finds."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.running: dict[str, ServiceProcess] = {}
        self.started: list[ServiceProcess] = []

    def start(self, name: str, **extra: str) -> ServiceProcess:
        process = ServiceProcess(name, {**self.env, **extra}, self.logs / f"{name}.log").start(wait=False)
        self.running[name] = process
        self.started.append(process)
        return process

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs.glob("*.log"))

    def wait_ready(self, name: str, timeout_s: float = 90) -> None:
        """Wait until ``name`` is ready; fail at once, with the logs, if any service exits meanwhile."""

        def ready() -> bool:
            for process in self.running.values():
                process.assert_running()
            return self.running[name].ready()

        wait_for(ready, timeout_s=timeout_s, what=f"{name} to be ready", detail=self.tail)

    def until(self, what: str, probe: Any, timeout_s: float = 90) -> Any:
        """``probe()``'s first truthy value; fail with the services' logs after ``timeout_s``."""
        return wait_for(probe, timeout_s=timeout_s, what=what, detail=self.tail)

    def stop(self, allowed: Iterable[int] = (0,)) -> None:
        """SIGTERM every service still running; each process started must have exited with an allowed code."""
        for process in self.started:
            process.send_signal(signal.SIGTERM)
        allowed = set(allowed)
        for process in self.started:
            code = process.wait(timeout_s=60)
            assert code in allowed, f"{process.name} exited with {code}:\n{self.tail()}"


def ferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, as a user with ``env`` exported runs it."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def train_digits(env: dict[str, str], hidden: str, epochs: int, seed: int) -> str:
    """`ferry train --wait` of the model ``digits`` on sklearn:digits; asserts it ended well, returns the request id."""
    result = ferry(
        env,
        "train",
        "--model",
        "digits",
        "--dataset",
        "sklearn:digits",
        "--hidden-sizes",
        hidden,
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "--wait",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"\(request ([0-9a-f-]+)\)", result.stdout)
    assert found, result.stdout
    return found.group(1)
