"""The one process runtime: every service's ``__main__`` hands it what its ``bootstrap`` built.

A :class:`Runtime` holds a service's named worker threads (consumer loop, relay, bake thread, scrape
cycle, ...), its readiness probes, its stop event and its close hooks. :func:`run` is the process
around it:

- configuration errors found while building (``refuse``) exit 2 with a one-line reason on stderr;
- the workers run guarded: one that raises or ends while the service should be running is logged
  (ERROR, with its name and traceback), turns ``/healthz`` false and ends the process with status 1;
- SIGTERM or SIGINT stops the HTTP server, sets the stop event, joins the workers (for the service's
  shutdown timeout), runs the close hooks in order, and the process exits 0.

Workers start at the ASGI lifespan's start (or at once, for a service without HTTP) and stop at its end,
so a service served by several uvicorn worker processes (the gateway) runs the same code in each.
:meth:`Runtime.add_routes` gives every service the same ``/healthz`` (live: the process and its workers),
``/readyz`` (ready: live, and the service's own probes) and ``/metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from shared.telemetry import metrics_payload, setup_telemetry

log = logging.getLogger("shared.runtime")

Probe = Callable[[], bool]
CONFIG_ERROR_EXIT = 2
CRASH_EXIT = 1


@dataclass(frozen=True)
class Worker:
    name: str
    target: Callable[[], None]


@dataclass
class Http:
    """Where and how the service's ASGI app is served (uvicorn options beyond host and port in ``options``)."""

    app: Any
    host: str
    port: int
    options: Mapping[str, Any] = field(default_factory=dict)


class Runtime:
    """One service process's workers, probes, stop event and close hooks; see the module's docstring."""

    def __init__(
        self,
        service: str,
        *,
        stop: threading.Event | None = None,
        shutdown_timeout_s: float = 10.0,
        readiness: Mapping[str, Probe] | None = None,
    ) -> None:
        self.service = service
        self.stop_event = stop or threading.Event()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.readiness: dict[str, Probe] = dict(readiness or {})
        self.http: Http | None = None
        self.failure: str | None = None
        """Why the process is failing (a worker died), or None."""
        self.on_failure: Callable[[], None] = lambda: None
        """Called once when a worker dies: :func:`run` sets it to stop the HTTP server."""
        self._workers: list[Worker] = []
        self._threads: list[threading.Thread] = []
        self._closers: list[Callable[[], object]] = []
        self._ending = threading.Event()
        self._lock = threading.Lock()
        self._started = self._stopped = self._closed = False

    # --- what bootstrap declares ------------------------------------------------------------------

    def worker(self, name: str, target: Callable[[], None]) -> None:
        """A thread to run while the service runs; it must return only once the stop event is set."""
        self._workers.append(Worker(name, target))

    def probe(self, name: str, check: Probe) -> None:
        """A readiness check; one that raises counts as not ready."""
        self.readiness[name] = check

    def on_close(self, hook: Callable[[], object]) -> None:
        """Run after the workers have been joined, in the order given."""
        self._closers.append(hook)

    def serve(self, app: Any, host: str, port: int, **options: Any) -> None:
        """Serve ``app`` (built with this runtime's lifespan and routes) while the process runs."""
        self.http = Http(app, host, port, options)

    # --- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            for worker in self._workers:
                thread = threading.Thread(target=self._guarded(worker), name=worker.name, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _guarded(self, worker: Worker) -> Callable[[], None]:
        def run() -> None:
            try:
                worker.target()
            except BaseException as error:
                if self.stop_event.is_set():  # cut short by the stop (a wait for a dependency, say): no crash
                    log.info("worker %s ended with %s while stopping", worker.name, repr(error)[:500])
                    return
                log.exception("worker %s crashed; stopping the %s", worker.name, self.service)
                self._fail(f"worker {worker.name} crashed")
                return
            if not self.stop_event.is_set():
                log.error("worker %s ended while the %s should be running; stopping it", worker.name, self.service)
                self._fail(f"worker {worker.name} ended unexpectedly")

        return run

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = reason
        self._ending.set()
        self.on_failure()

    def request_stop(self) -> None:
        """Begin a clean stop (a signal's handler calls this): the process then ends with status 0."""
        self._ending.set()

    def wait(self) -> None:
        """Until a stop is requested or a worker dies (for a service without HTTP)."""
        while not self._ending.wait(1.0):
            pass

    def stop_workers(self) -> None:
        """Set the stop event and join the workers, each for at most the shutdown timeout (once)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.stop_event.set()
        for thread in self._threads:
            thread.join(self.shutdown_timeout_s)
            if thread.is_alive():
                log.warning("worker %s still running after %.0fs; leaving it", thread.name, self.shutdown_timeout_s)

    def close(self) -> None:
        """Run the close hooks in order (once); one that fails is logged and the next still runs."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for hook in self._closers:
            try:
                hook()
            except Exception:  # noqa: BLE001 - what follows must still be released
                log.exception("closing the %s: %s failed", self.service, getattr(hook, "__qualname__", hook))

    def shutdown(self) -> None:
        self.stop_workers()
        self.close()

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """The ASGI lifespan of a service app with no start-up of its own: workers start, and stop after."""
        self.start()
        try:
            yield
        finally:
            await asyncio.to_thread(self.shutdown)

    @property
    def exit_status(self) -> int:
        return CRASH_EXIT if self.failure is not None else 0

    # --- health ------------------------------------------------------------------------------------

    def workers_alive(self) -> dict[str, bool]:
        return {thread.name: thread.is_alive() for thread in self._threads}

    def live(self) -> bool:
        """The process serves and every worker runs (or is stopping, as told)."""
        if self.failure is not None:
            return False
        return self.stop_event.is_set() or all(self.workers_alive().values())

    def checks(self) -> dict[str, bool]:
        return {name: _safe(name, check) for name, check in self.readiness.items()}

    def add_routes(self, app: FastAPI) -> None:
        """``/healthz``, ``/readyz`` and ``/metrics``, the same in every service."""

        @app.get("/healthz", tags=["operations"], summary="Liveness: the process and its workers run")
        def healthz() -> Response:
            if self.live():
                return JSONResponse({"status": "ok"})
            error = self.failure or "a worker has stopped: " + ", ".join(
                name for name, alive in self.workers_alive().items() if not alive
            )
            return JSONResponse({"status": "failing", "error": error}, status_code=503)

        @app.get(
            "/readyz",
            tags=["operations"],
            summary="Readiness: live, and the service's own probes pass",
            responses={503: {"description": "not live, or a probe fails"}},
        )
        def readyz() -> Response:
            checks = self.checks()
            live = self.live()
            if live and all(checks.values()):
                return JSONResponse({"status": "ready", "checks": checks})
            failing = ([] if live else ["live"]) + [name for name, ok in checks.items() if not ok]
            body = {"status": "unavailable", "checks": checks, "error": "not ready: " + ", ".join(failing)}
            return JSONResponse(body, status_code=503)

        @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
        def metrics_endpoint() -> Response:
            payload, content_type = metrics_payload()
            return Response(content=payload, media_type=content_type)


def _safe(name: str, check: Probe) -> bool:
    try:
        return bool(check())
    except Exception as error:  # noqa: BLE001 - a failing probe means "not ready", never a 500
        log.warning("readiness probe %s failed: %s", name, error)
        return False


def run(
    service: str,
    build: Callable[[], Runtime],
    *,
    log_level: str = "INFO",
    refuse: tuple[type[Exception], ...] = (),
) -> int:
    """The service process: telemetry, ``build()``, then serve until a signal or a crash; the exit status."""
    telemetry = setup_telemetry(service, log_level=log_level)
    try:
        try:
            runtime = build()
        except refuse as error:
            log.error("refusing to start: %s", error)
            print(f"ferry {service}: refusing to start: {error}", file=sys.stderr, flush=True)
            return CONFIG_ERROR_EXIT
        return _serve(runtime)
    finally:
        telemetry.shutdown()


def _serve(runtime: Runtime) -> int:
    server: uvicorn.Server | None = None

    def stop_server() -> None:
        if server is not None:
            server.should_exit = True

    def request_stop(signum: int, frame: FrameType | None) -> None:
        runtime.request_stop()
        stop_server()

    # uvicorn swaps in its own handlers while serving and raises the signal again after: ours then runs.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    runtime.on_failure = stop_server
    try:
        if runtime.http is None:
            runtime.start()
            runtime.wait()
        else:
            http = runtime.http
            options = {"log_config": None, "access_log": False, "lifespan": "on", **http.options}
            if "timeout_graceful_shutdown" not in options:
                options["timeout_graceful_shutdown"] = max(1, int(runtime.shutdown_timeout_s))
            server = uvicorn.Server(uvicorn.Config(http.app, host=http.host, port=http.port, **options))
            log.info("%s serving on http://%s:%s", runtime.service, http.host, http.port)
            server.run()
            if not server.started and runtime.failure is None:
                runtime.failure = "the HTTP server did not start"
    except SystemExit:  # uvicorn exits so when it cannot bind its port
        runtime.failure = runtime.failure or "the HTTP server did not start"
    finally:
        runtime.shutdown()
    log.info("%s stopped%s", runtime.service, f" ({runtime.failure})" if runtime.failure else "")
    return runtime.exit_status


def run_processes(
    service: str, factory: str, *, workers: int, host: str, port: int, log_level: str = "INFO", **options: Any
) -> int:
    """Several serving processes on one port (uvicorn's multi-process mode): each calls ``factory`` (an
    import string of a function that builds the app, with its own runtime, whose lifespan runs its workers)."""
    telemetry = setup_telemetry(service, log_level=log_level)
    # uvicorn's supervisor handles SIGTERM and raises it again once it has stopped: by then this no-op is
    # the handler, so the process returns its own exit status instead of dying of the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: None)
    log.info("%s starting %d processes on http://%s:%s", service, workers, host, port)
    try:
        uvicorn.run(
            factory,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            **options,
        )
    finally:
        telemetry.shutdown()
    return 0


def stop_this_process() -> None:
    """A worker process whose server the runtime does not hold (uvicorn's multi-process mode): ask uvicorn
    to stop it, as a signal from outside would."""
    os.kill(os.getpid(), signal.SIGTERM)
