"""The whole local Ferry: ``ferry up`` / ``ferry status`` / ``ferry down`` (``make up|status|down``).

``up`` starts the stack (Kafka and PostgreSQL, through :class:`shared.local.stack.Stack`, the same code as
the test fixtures), makes sure the registry's and the monitor's token files exist, and starts every installed service
under supervisord (:mod:`shared.local.supervisor`), then waits until each answers its health path.
Kafka and PostgreSQL are not supervisord's: the stack starts them with a readiness check, tracks
them by pid, and PostgreSQL's postmaster restarts its own crashed backends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from shared.kafka import kafka_answers
from shared.local.replicas import Replica, ReplicaPorts, replicas_of, scrape_targets
from shared.local.seaweedfs import weed_path
from shared.local.stack import Stack
from shared.local.supervisor import ProgramInfo, Supervisor, supervisor_settings
from shared.local.tokens import (
    TOKENS_FILE_ENV,
    WEBHOOK_TOKENS_FILE_ENV,
    TokensFile,
    ensure_tokens_file,
    ensure_webhook_tokens_file,
    operator_token,
)
from shared.services import SERVICES, ServiceSpec
from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for

Say = Callable[[str], None]


@dataclass(frozen=True)
class Part:
    """One row of ``ferry status``."""

    name: str
    pid: int | None
    port: int | None
    state: str
    healthy: bool
    restarts: int = 0
    last_start: float | None = None
    log: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def settings_environment(settings: FerrySettings) -> dict[str, str]:
    """``FERRY_*`` variables that give a child process exactly these settings (home made absolute).

    ``FERRY_DATABASE_URL`` stays unset while the embedded server is used: set, it means "external".
    """
    values = settings.model_dump(exclude_none=True)
    values["home"] = settings.home.absolute()
    values["datasets_root"] = settings.resolved_datasets_root
    return {f"FERRY_{key.upper()}": str(value) for key, value in values.items()}


def service_environment(
    settings: FerrySettings, tokens: TokensFile, webhook_tokens: TokensFile, replicas: list[Replica] | None = None
) -> dict[str, str]:
    """The environment supervisord (and so every service) runs with; with more than one process of a
    service the monitor scrapes each (FERRY_MONITOR_TARGETS) and the console asks each gateway
    (FERRY_CONSOLE_GATEWAY_URLS), unless the user set them."""
    env = dict(os.environ) | settings_environment(settings)
    seaweedfs = Stack(settings).seaweedfs
    if seaweedfs is not None:  # the local S3 store: its endpoint and generated key pair, as boto3 reads them
        env |= seaweedfs.environment()
    env[TOKENS_FILE_ENV] = str(tokens.path)
    env[WEBHOOK_TOKENS_FILE_ENV] = str(webhook_tokens.path)
    # The registry reads FERRY_API_TOKEN until it reads the tokens file: the same token either way.
    env.setdefault("FERRY_API_TOKEN", operator_token(tokens.path))
    for spec in SERVICES:  # how services find each other: FERRY_<NAME>_URL unless the user set one
        env.setdefault(f"FERRY_{spec.name.upper()}_URL", spec.url())
    if replicas and any(replica.index > 1 for replica in replicas):
        env.setdefault("FERRY_MONITOR_TARGETS", scrape_targets(replicas))
        # The console shows how each gateway process sees a model's deployment: every replica, not the first.
        gateways = [replica.url() for replica in replicas if replica.spec.name == "gateway"]
        env.setdefault("FERRY_CONSOLE_GATEWAY_URLS", ",".join(gateways))
    return env


def up(settings: FerrySettings, say: Say = print) -> int:
    """Start the stack and the services; 0 once every part is healthy."""
    started = time.monotonic()
    options = supervisor_settings()  # a bad FERRY_REPLICAS stops `up` before anything starts
    stack = Stack(settings)
    if stack.seaweedfs is not None and not weed_path().exists():
        say(f"building SeaweedFS (the local S3 store) into {weed_path()}: once, about 5-15 minutes")
    stack.up()
    settings.resolved_datasets_root.mkdir(parents=True, exist_ok=True)
    say(f"stack up in {time.monotonic() - started:.1f}s; csv datasets are read from {settings.resolved_datasets_root}")
    tokens = ensure_tokens_file(settings)
    say(f"API tokens: {tokens.path} ({'generated' if tokens.created else 'kept'}; lines '<user> <token>', mode 0600)")
    webhook_tokens = ensure_webhook_tokens_file(settings)
    say(f"webhook tokens: {webhook_tokens.path} ({'generated' if webhook_tokens.created else 'kept'})")
    supervisor = Supervisor(settings, options)
    names = ", ".join(replica.name for replica in supervisor.replicas()) or "none installed"
    environment = service_environment(settings, tokens, webhook_tokens, supervisor.replicas())
    changed = supervisor.pid() is not None and supervisor.settings_changed(environment)
    fresh = supervisor.start(environment, workdir=Path.cwd())
    say(f"supervisord {'started' if fresh else 'already running'} (pid {supervisor.pid()}): {names}")
    if changed:
        say("  FERRY_* settings differ from those it runs with: `make down && make up` applies them")
    healthy = _wait_healthy(settings, supervisor)
    say(render(status(settings)))
    if not healthy:
        say(f"not every service is healthy yet; see {supervisor.log_file.parent}/<service>.log")
        return 1
    return 0


def _wait_healthy(settings: FerrySettings, supervisor: Supervisor) -> bool:
    replicas = supervisor.replicas()
    try:
        wait_for(
            lambda: all(health_ok(replica) for replica in replicas),
            what="the services",
            timeout_s=supervisor.options.ready_timeout_s,
            max_s=2.0,
        )
    except NotReady:
        return False
    return True


def down(settings: FerrySettings, say: Say = print) -> int:
    """Stop the services, supervisord, then Kafka and PostgreSQL."""
    stopped = ["supervisord and its services"] if Supervisor(settings).stop() else []
    stopped += Stack(settings).down()
    say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def health_ok(process: ServiceSpec | Replica, timeout_s: float = 2.0) -> bool:
    """An HTTP GET of the service's (or one replica's) health path answers 200."""
    spec = process.spec if isinstance(process, Replica) else process
    try:
        return httpx.get(process.url(spec.health_path), timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def status(settings: FerrySettings) -> list[Part]:
    """Kafka, PostgreSQL, supervisord and every service, each with pid, port, health and restarts."""
    stack = Stack(settings)
    kafka_pid = stack.kafka.pid()
    parts = [
        Part(
            "kafka",
            kafka_pid,
            settings.kafka_port,
            "running" if kafka_pid else "stopped",
            bool(kafka_pid) and kafka_answers(stack.kafka.admin_settings),
            log=str(stack.kafka.log_file),
        ),
    ]
    if stack.seaweedfs is not None:
        weed_pid = stack.seaweedfs.pid()
        port = stack.seaweedfs.ports()["s3.port"]
        answers = bool(weed_pid) and stack.seaweedfs.answers()
        state = "running" if weed_pid else "stopped"
        parts.append(Part("seaweedfs", weed_pid, port, state, answers, log=str(stack.seaweedfs.log_file)))
    if stack.postgres is None:
        parts.append(Part("postgres", None, None, "external", True))
    else:
        running = stack.postgres.is_running()
        parts.append(
            Part(
                "postgres",
                stack.postgres.pid() if running else None,
                settings.postgres_port,
                "running" if running else "stopped",
                running and stack.postgres.accepts_connections(),
                log=str(stack.postgres.log_file),
            )
        )
    supervisor = Supervisor(settings, supervisor_settings())
    daemon = supervisor.pid()
    parts.append(
        Part(
            "supervisord", daemon, None, "running" if daemon else "stopped", bool(daemon), log=str(supervisor.log_file)
        )
    )
    return parts + _service_parts(supervisor)


def _service_parts(supervisor: Supervisor) -> list[Part]:
    """A row per service process: the replicas FERRY_REPLICAS names here, and any more the daemon runs."""
    programs = {program.name: program for program in supervisor.programs()}
    shown = [spec for spec in SERVICES if spec.installed() or spec.name in programs]
    counts = supervisor.options.replica_counts()
    for name in programs:  # another shell's `up` may have asked for more
        service, _, index = name.rpartition("-")
        if index.isdigit():
            counts[service] = max(counts.get(service, 1), int(index))
    return [
        _service_part(replica, programs.get(replica.name), supervisor)
        for replica in replicas_of(shown, counts, ReplicaPorts(supervisor.folder), assign=False)
        if replica.name in programs or replica.spec.installed()
    ]


def _service_part(replica: Replica, program: ProgramInfo | None, supervisor: Supervisor) -> Part:
    name = replica.name
    if program is None:
        return Part(name, None, replica.port, "not started", False, log=str(supervisor.log_of(name)))
    return Part(
        name,
        program.pid,
        replica.port,
        program.state.lower(),
        program.state == "RUNNING" and health_ok(replica),
        program.restarts,
        program.started,
        str(program.log_file),
    )


def healthy(parts: list[Part]) -> bool:
    """True when the stack is up and every service supervisord was given is healthy."""
    return all(part.healthy for part in parts if part.state != "not started")


def render(parts: list[Part]) -> str:
    rows = [("part", "pid", "port", "state", "health", "last restart")]
    for part in parts:
        if part.restarts and part.last_start:
            times = "restart" if part.restarts == 1 else "restarts"
            restart = f"{time.strftime('%H:%M:%S', time.localtime(part.last_start))} ({part.restarts} {times})"
        else:
            restart = "-"
        rows.append(
            (
                part.name,
                str(part.pid or "-"),
                str(part.port or "-"),
                part.state,
                "ok" if part.healthy else "-" if part.state == "not started" else "DOWN",
                restart,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
