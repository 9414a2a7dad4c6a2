"""Ferry's services under supervisord: one generated config, one daemon, restarts with back-off.

``make up`` writes ``<home>/supervisor/supervisord.conf`` with one ``[program:NAME]`` per installed
service of :data:`shared.services.SERVICES` (``python -m services.NAME``; nothing here knows a
service by name) and starts supervisord as a daemon. supervisord restarts a service that exits,
whatever its exit code; one that dies within ``startsecs`` of its start is retried after 1, 2, 3 …
seconds (supervisord's back-off) and after ``startretries`` such tries is left FATAL, which
``ferry status`` shows and ``make up`` starts again. The services inherit the daemon's environment:
the ``FERRY_*`` settings of the shell that ran ``make up``. Logs: ``<home>/logs/NAME.log`` and
``<home>/logs/supervisord.log``. The control socket is a unix socket that only its owner can use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import subprocess
import sys
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.local.replicas import REPLICAS_ENV, Replica, ReplicaPorts, parse_replicas, replicas_of
from shared.local.stack import pid_alive, terminate_pid
from shared.services import SERVICES, ServiceSpec, installed_services
from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for

SOCKET_PATH_MAX = 100  # a unix socket's path must fit in sun_path (108 bytes on Linux)
_SPAWNED = re.compile(r"spawned: '(?P<name>[^']+)' with pid (?P<pid>\d+)")


def settings_digest(environment: Mapping[str, str]) -> str:
    """A digest of the ``FERRY_*`` and ``OTEL_*`` variables the services read."""
    relevant = sorted(
        (key, value)
        for key, value in environment.items()
        if key.startswith(("FERRY_", "OTEL_")) and not key.startswith("FERRY_SUPERVISOR_")  # read by `up` alone
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()


class SupervisorSettings(BaseSettings):
    """How supervisord runs the services (environment prefix ``FERRY_SUPERVISOR_``)."""

    model_config = SettingsConfigDict(env_prefix="FERRY_SUPERVISOR_", extra="ignore", frozen=True)

    services: str | None = Field(
        default=None, description="Comma-separated services to run; default every installed one"
    )
    start_secs: int = Field(default=5, ge=0, le=600, description="Seconds up before a start counts as successful")
    start_retries: int = Field(default=10, ge=0, le=100, description="Quick deaths retried (1 s, 2 s, … apart)")
    stop_wait_s: int = Field(default=30, ge=1, le=600, description="SIGTERM to SIGKILL, per service")
    ready_timeout_s: float = Field(default=240, gt=0, description="How long `make up` waits for every health")
    replicas: str = Field(
        default="",
        validation_alias=AliasChoices(REPLICAS_ENV, "replicas"),
        description="Processes per service, e.g. registry=2,gateway=2 (FERRY_REPLICAS); a service not named runs once",
    )

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: str) -> str:
        parse_replicas(value, (spec.name for spec in SERVICES))
        return value

    def replica_counts(self) -> dict[str, int]:
        return parse_replicas(self.replicas, (spec.name for spec in SERVICES))


@dataclass(frozen=True)
class ProgramInfo:
    """One supervised service as supervisord reports it."""

    name: str
    state: str
    pid: int | None
    started: float | None
    restarts: int
    log_file: Path


class SupervisorError(RuntimeError):
    """supervisord could not be started or reached; the message says what to look at."""


def supervisor_settings() -> SupervisorSettings:
    """The ``FERRY_SUPERVISOR_*`` and ``FERRY_REPLICAS`` settings; raises SupervisorError saying what is wrong."""
    try:
        return SupervisorSettings()
    except ValidationError as error:
        raise SupervisorError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())) from None


class Supervisor:
    """The supervisord of one Ferry home: its config, its daemon, its programs."""

    def __init__(self, settings: FerrySettings, options: SupervisorSettings | None = None) -> None:
        self.settings = settings
        self.options = options or supervisor_settings()
        self.home = settings.home.absolute()
        self.folder = self.home / "supervisor"
        self.config = self.folder / "supervisord.conf"
        self.pid_file = self.folder / "supervisord.pid"
        self.log_file = self.home / "logs" / "supervisord.log"
        self.socket = self.folder / "supervisord.sock"
        if len(str(self.socket)) > SOCKET_PATH_MAX:  # a deep home: keep the socket short, still private
            tag = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
            self.socket = Path(f"/tmp/ferry-supervisor-{tag}.sock")

    @property
    def settings_file(self) -> Path:
        """The digest of the settings the running daemon (and so every service) was started with."""
        return self.folder / "settings.sha256"

    def settings_changed(self, environment: Mapping[str, str]) -> bool:
        """True when ``environment``'s Ferry settings differ from those the running daemon has."""
        try:
            return self.settings_file.read_text() != settings_digest(environment)
        except OSError:
            return True

    def services(self) -> list[ServiceSpec]:
        """The services this supervisor runs: every installed one, or those FERRY_SUPERVISOR_SERVICES names."""
        installed = installed_services()
        if not self.options.services:
            return installed
        wanted = {name.strip() for name in self.options.services.split(",") if name.strip()}
        unknown = wanted - {spec.name for spec in installed}
        if unknown:
            raise SupervisorError(f"FERRY_SUPERVISOR_SERVICES names services that are not installed: {sorted(unknown)}")
        return [spec for spec in installed if spec.name in wanted]

    def replicas(self, *, assign: bool = True) -> list[Replica]:
        """Every process this supervisor runs (FERRY_REPLICAS of each service), in start order."""
        ports = ReplicaPorts(self.folder)
        return replicas_of(self.services(), self.options.replica_counts(), ports, assign=assign)

    def log_of(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def render_config(self, workdir: Path) -> str:
        """supervisord's configuration for this home (every value escaped for its %-interpolation)."""

        def q(value: object) -> str:
            return str(value).replace("%", "%%")

        options = self.options
        sections = [
            f"[unix_http_server]\nfile={q(self.socket)}\nchmod=0700\n",
            "[supervisord]\n"
            f"logfile={q(self.log_file)}\nlogfile_maxbytes=10MB\nlogfile_backups=3\nloglevel=info\n"
            f"pidfile={q(self.pid_file)}\ndirectory={q(workdir)}\nidentifier=ferry-{q(self.home.name)}\n"
            "nodaemon=false\numask=022\n" + (f"user={q(pwd.getpwuid(0).pw_name)}\n" if os.geteuid() == 0 else ""),
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=unix://{q(self.socket)}\n",
        ]
        for replica in self.replicas():
            spec = replica.spec
            priority = 100 + SERVICES.index(spec)  # SERVICES' order is the start order, stable across updates
            sections.append(
                f"[program:{replica.name}]\n"
                f"command={q(sys.executable)} -m {spec.module}\ndirectory={q(workdir)}\npriority={priority}\n"
                "autostart=true\nautorestart=true\n"
                f"startsecs={options.start_secs}\nstartretries={options.start_retries}\n"
                f"stopsignal=TERM\nstopwaitsecs={options.stop_wait_s}\nstopasgroup=true\nkillasgroup=true\n"
                f"redirect_stderr=true\nstdout_logfile={q(self.log_of(replica.name))}\n"
                "stdout_logfile_maxbytes=20MB\nstdout_logfile_backups=3\n"
                f"environment={self._environment(spec.name, replica.environment())}\n"
            )
        return "\n".join(sections)

    def _environment(self, name: str, own: Mapping[str, str]) -> str:
        """A program's own variables: its port and replica number and, with a secured broker, its service's
        Kafka user (shared/kafka_access.py)."""
        values = {"PYTHONUNBUFFERED": "1", **own}
        if self.settings.kafka_secured:
            from shared.local.kafka_security import client_environment

            values |= client_environment(self.settings, name)
        return ",".join(f'{key}="{str(value).replace("%", "%%")}"' for key, value in values.items())

    def write_config(self, workdir: Path) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.render_config(workdir))
        return self.config

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def _rpc(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def answers(self) -> bool:
        """True when the daemon answers on its socket and has finished starting."""
        try:
            return bool(self._rpc().getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False

    def start(self, environment: Mapping[str, str], workdir: Path) -> bool:
        """Start supervisord with ``environment`` (True), or bring a running one up to date (False)."""
        self.write_config(workdir)
        if self.pid() is not None:
            self._update()
            return False
        self._stop_stragglers()  # services a killed daemon left behind would hold their ports
        self.settings_file.write_text(settings_digest(environment))
        if self.log_file.exists():  # one log per daemon: restart counts are this daemon's
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config)]
        result = subprocess.run(
            command,
            env=dict(environment),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise SupervisorError(f"supervisord did not start:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        try:
            wait_for(self.answers, what="supervisord", timeout_s=30)
        except NotReady as error:
            raise SupervisorError(f"{error}; see {self.log_file}") from None
        return True

    def _update(self) -> None:
        """Apply a changed config (as ``supervisorctl update``) and start what is not running."""
        rpc = self._rpc()
        [[added, changed, removed]] = rpc.reloadConfig()
        for name in [*removed, *changed]:
            rpc.stopProcessGroup(name, True)
            rpc.removeProcessGroup(name)
        for name in [*changed, *added]:
            rpc.addProcessGroup(name)
        for info in rpc.getAllProcessInfo():
            if info["statename"] in ("STOPPED", "EXITED", "FATAL"):
                with contextlib.suppress(xmlrpc.client.Fault):  # ALREADY_STARTED: it won the race
                    rpc.startProcess(info["name"], False)

    def programs(self) -> list[ProgramInfo]:
        """What supervisord runs, with restart counts; empty when it does not run."""
        if self.pid() is None:
            return []
        try:
            infos = self._rpc().getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return []
        spawns = self._spawn_counts()
        return [
            ProgramInfo(
                name=info["name"],
                state=info["statename"],
                pid=info["pid"] or None,
                started=info["start"] or None,
                restarts=max(0, spawns.get(info["name"], 0) - 1),
                log_file=self.log_of(info["name"]),
            )
            for info in infos
        ]

    def _spawn_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for match in _SPAWNED.finditer(self.log_file.read_text(errors="replace")):
                counts[match["name"]] = counts.get(match["name"], 0) + 1
        return counts

    def stragglers(self) -> list[int]:
        """Pids of processes this home's supervisord started (found by the variable it gives them)."""
        marker = f"SUPERVISOR_SERVER_URL=unix://{self.socket}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "environ").read_bytes() + b"\0" and pid_alive(int(entry.name)):
                        found.append(int(entry.name))
        return found

    def _stop_stragglers(self) -> int:
        stragglers = self.stragglers()
        for pid in stragglers:
            terminate_pid(pid, f"service pid {pid} left by supervisord", timeout_s=self.options.stop_wait_s)
        return len(stragglers)

    def stop(self) -> bool:
        """Stop every service and then supervisord; False when nothing was running. Leaves no process."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                rpc = self._rpc()
                rpc.stopAllProcesses(True)
                rpc.shutdown()
            try:
                wait_for(lambda: not pid_alive(pid), what="supervisord stopping", timeout_s=30, max_s=0.5)
            except NotReady:
                terminate_pid(pid, "supervisord", timeout_s=self.options.stop_wait_s + 10)
            self.pid_file.unlink(missing_ok=True)
        # A daemon that was killed, or failed to stop a service, leaves processes behind: stop them too.
        return self._stop_stragglers() > 0 or pid is not None
