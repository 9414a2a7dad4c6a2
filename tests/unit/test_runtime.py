"""The process runtime: one crash policy, one stop path, one configuration-error exit, truthful probes.

Signals and exit statuses are checked on real child processes (``python -c`` running :func:`run`);
the probes in process, through the routes every service gets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support import free_port

from shared.local.stack import PROJECT_ROOT
from shared.runtime import Runtime
from shared.waiting import wait_for

CHILD = """
import sys
from fastapi import FastAPI
from shared.runtime import Runtime, run

mode, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class BadSettings(Exception):
    pass

def note(line):
    with open(record, "a") as out:
        out.write(line + "\\n")

def crash():
    raise RuntimeError("the broker said no")

def build():
    if mode == "config":
        raise BadSettings("FERRY_X is a placeholder")
    runtime = Runtime("toy", shutdown_timeout_s=5)
    stop = runtime.stop_event
    runtime.worker("steady", lambda: stop.wait())
    runtime.worker("poller", crash if mode == "crash" else (lambda: None) if mode == "ends" else lambda: stop.wait())
    runtime.on_close(lambda: note("first close: workers stopped=" + str(stop.is_set())))
    runtime.on_close(lambda: note("second close"))
    if port:
        app = FastAPI(lifespan=runtime.lifespan)
        runtime.add_routes(app)
        runtime.serve(app, "127.0.0.1", port)
    return runtime

sys.exit(run("toy", build, refuse=(BadSettings,)))
"""


def start(mode: str, tmp_path: Path, port: int = 0) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", CHILD, mode, str(port), str(tmp_path / "record.txt")]
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def log_lines(stderr: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_a_worker_that_crashes_ends_the_process_with_status_1_and_says_why(tmp_path: Path) -> None:
    child = start("crash", tmp_path, free_port())
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 1, stderr
    [crash] = [line for line in log_lines(stderr) if line["level"] == "ERROR"]
    assert crash["message"] == "worker poller crashed; stopping the toy"
    assert "RuntimeError: the broker said no" in crash["exception"]  # the traceback, with the reason
    assert (tmp_path / "record.txt").read_text().splitlines() == ["first close: workers stopped=True", "second close"]


def test_a_worker_that_ends_while_the_service_runs_is_a_crash_too(tmp_path: Path) -> None:
    child = start("ends", tmp_path)  # no HTTP: the runtime waits on its own
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 1, stderr
    assert any("worker poller ended" in line["message"] for line in log_lines(stderr) if line["level"] == "ERROR")


def test_sigterm_stops_the_server_and_the_workers_runs_the_close_hooks_in_order_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    child = start("steady", tmp_path, port)
    try:
        wait_for(lambda: _healthy(child, port), what="the child's /healthz", timeout_s=60)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    assert not [line for line in log_lines(stderr) if line["level"] == "ERROR"]
    assert (tmp_path / "record.txt").read_text().splitlines() == ["first close: workers stopped=True", "second close"]


def test_a_configuration_error_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    child = start("config", tmp_path)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 2
    plain = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert plain == ["ferry toy: refusing to start: FERRY_X is a placeholder"]
    assert not (tmp_path / "record.txt").exists()  # nothing was built, so nothing to close


def test_healthz_turns_false_when_a_worker_dies_and_readyz_follows_the_probes() -> None:
    release = threading.Event()
    broker = {"up": False}
    runtime = Runtime("toy", readiness={"broker": lambda: broker["up"]})
    runtime.worker("consumer-loop", release.wait)
    failures: list[str] = []
    runtime.on_failure = lambda: failures.append(str(runtime.failure))
    app = FastAPI(lifespan=runtime.lifespan)
    runtime.add_routes(app)
    with TestClient(app) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        not_ready = http.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "unavailable", "checks": {"broker": False}, "error": "not ready: broker"}
        broker["up"] = True
        assert http.get("/readyz").json() == {"status": "ready", "checks": {"broker": True}}
        release.set()  # the worker returns while the service should be running
        wait_for(lambda: failures, what="the runtime to notice", timeout_s=10)
        sick = http.get("/healthz")
        assert sick.status_code == 503 and sick.json()["error"] == "worker consumer-loop ended unexpectedly"
        assert http.get("/readyz").json()["error"] == "not ready: live"
        assert http.get("/metrics").status_code == 200
    assert failures == ["worker consumer-loop ended unexpectedly"]  # once, however often asked
    assert runtime.exit_status == 1


def test_a_probe_that_raises_counts_as_not_ready() -> None:
    def broken() -> bool:
        raise ConnectionError("refused")

    runtime = Runtime("toy", readiness={"database": broken, "broker": lambda: True})
    assert runtime.checks() == {"database": False, "broker": True}


def test_close_hooks_all_run_even_when_one_fails_and_only_once() -> None:
    ran: list[str] = []
    runtime = Runtime("toy")
    runtime.on_close(lambda: ran.append("a"))
    runtime.on_close(lambda: 1 / 0)
    runtime.on_close(lambda: ran.append("c"))
    runtime.shutdown()
    runtime.shutdown()
    assert ran == ["a", "c"] and runtime.exit_status == 0


def _healthy(child: subprocess.Popen[str], port: int) -> bool:
    assert child.poll() is None, "the child died before answering"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False
