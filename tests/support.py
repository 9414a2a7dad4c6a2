"""Small helpers every kind of test uses: a free loopback port, waiting on a condition, and a service process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from shared.local.ports import free_port
from shared.local.stack import PROJECT_ROOT
from shared.services import ServiceSpec, service

__all__ = ["ServiceProcess", "free_port", "wait_for"]


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout_s: float = 120.0,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
    poll_s: float = 0.1,
) -> Any:
    """Poll until ``predicate`` returns something truthy and return it; fail the test after ``timeout_s``
    (with ``detail()``, say the services' logs, in the message).

    Deadlines are generous on purpose: the machine may be busy, and a test judges behaviour, not speed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}" + (f":\n{detail()}" if detail else ""))


class ServiceProcess:
    """``python -m services.<name>`` as a deployment runs it: ``env`` is its whole environment, its output
    goes to ``log`` (appended, so a restart keeps the first run's lines).

    Its HTTP port is the service's own variable in ``shared/services.py``; when ``env`` does not set it, the
    process gets a free port of its own (never the default one, which a running ``make up`` may hold). It is
    ready when ``/readyz`` answers 200, or, for a service without a readiness route (404), its liveness path.
    A process that exits while a test waits on it fails the test at once, with its log.
    """

    def __init__(self, name: str, env: Mapping[str, str], log: Path) -> None:
        self.spec: ServiceSpec = service(name)
        self.name, self.log = name, log
        self.env = {"PYTHONUNBUFFERED": "1", **env}
        self.env.setdefault(self.spec.port_env, str(free_port()))
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env[self.spec.port_env])

    @property
    def url(self) -> str:
        if not self.port:
            raise ValueError(f"{self.name} has no HTTP port ({self.spec.port_env}=0)")
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout_s: float = 90) -> Self:
        """Start the process; with ``wait``, return once it is ready."""
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", self.spec.module],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready(timeout_s=timeout_s)
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote (stdout and stderr) so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.log.name}\n{self.output()[-chars:]}"

    def assert_running(self) -> None:
        """Fail the test, with the log, if the process has exited."""
        if self.popen is None or self.popen.poll() is not None:
            code = None if self.popen is None else self.popen.returncode
            pytest.fail(f"{self.name} is not running (exit status {code}):\n{self.tail()}")

    def ready(self) -> bool:
        """One readiness probe (fails the test if the process has exited)."""
        self.assert_running()
        try:
            answer = httpx.get(f"{self.url}/readyz", timeout=5)
            if answer.status_code == 404:  # no readiness route: liveness is what it offers
                answer = httpx.get(f"{self.url}{self.spec.health_path}", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def wait_ready(self, timeout_s: float = 90) -> None:
        wait_for(self.ready, timeout_s=timeout_s, what=f"{self.name} ready at {self.url}", detail=self.tail)

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` if the process still runs."""
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def wait(self, timeout_s: float = 60) -> int:
        """The exit status once the process ends; one still running after ``timeout_s`` is killed and fails the
        test."""
        assert self.popen is not None, f"{self.name} was never started"
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            pytest.fail(f"{self.name} still ran {timeout_s}s later; killed:\n{self.tail()}")

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send ``signum`` (SIGTERM: a clean stop) and return the exit status."""
        self.send_signal(signum)
        return self.wait(timeout_s)

    def close(self, grace_s: float = 0) -> None:
        """Teardown, judging nothing: SIGTERM and ``grace_s`` to end, then SIGKILL for what still runs."""
        if not self.running:
            return
        assert self.popen is not None
        if grace_s:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=grace_s)
                return
            except subprocess.TimeoutExpired:
                pass
        self.popen.kill()
        self.popen.wait(timeout=10)
