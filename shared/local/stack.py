"""The local stack: a real Kafka broker (KRaft, from Maven Central jars) and a real PostgreSQL.

One implementation serves ``make up``, ``make demo``, ``ferry stack`` and the test fixtures. Every
file lives under the settings' home folder; processes are tracked by pid files there.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.kafka import kafka_answers
from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"


class StackError(RuntimeError):
    """The stack could not be brought up; the message says what to do."""


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    except ChildProcessError:
        pass
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _wait(condition: Callable[[], bool], what: str, timeout_s: float, log_file: Path | None = None) -> None:
    try:
        wait_for(condition, what=what, timeout_s=timeout_s)
    except NotReady as error:
        tail = ""
        if log_file and log_file.exists():
            tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise StackError(f"{error}{tail}") from None


def terminate_pid(pid: int, name: str, timeout_s: float = 30) -> None:
    """SIGTERM, wait until the process is gone, SIGKILL if it is not."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_for(lambda: not pid_alive(pid), what=f"{name} stopping", timeout_s=timeout_s, max_s=0.5)
    except NotReady:
        log.warning("%s (pid %s) ignored SIGTERM; killing it", name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(NotReady):
            wait_for(lambda: not pid_alive(pid), what=f"{name} killed", timeout_s=10, max_s=0.5)


def _terminate(pid_file: Path, name: str, timeout_s: float = 30) -> bool:
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    terminate_pid(pid, name, timeout_s)
    pid_file.unlink(missing_ok=True)
    return True


@dataclass
class KafkaBroker:
    """A single-node Kafka broker in KRaft combined mode (broker + controller)."""

    settings: FerrySettings

    @property
    def folder(self) -> Path:
        return self.settings.home.absolute() / "kafka"

    @property
    def lib(self) -> Path:
        return self.settings.resolved_cache_dir.absolute() / "kafka-lib"

    @property
    def pid_file(self) -> Path:
        return self.folder / "kafka.pid"

    @property
    def admin_settings(self) -> FerrySettings:
        """How the stack itself talks to the broker: as ``admin`` when it is secured."""
        if not self.settings.kafka_secured:
            return self.settings
        from shared.kafka_access import ADMIN
        from shared.local.kafka_security import client_settings

        return client_settings(self.settings, ADMIN)

    @property
    def log_file(self) -> Path:
        return self.settings.home.absolute() / "logs" / "kafka.log"

    def ensure_jars(self) -> None:
        """Resolve the broker's jars from Maven Central into the cache, once.

        Under a lock beside the cache: two processes starting at once (pytest's workers, each with its own
        stack) resolve once, and neither runs a broker from a folder the other is rewriting.
        """
        marker = self.lib / ".complete"
        if marker.exists() and marker.read_text() == KAFKA_POM.read_text():
            return
        self.lib.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lib.with_name("kafka-lib.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if marker.exists() and marker.read_text() == KAFKA_POM.read_text():
                return  # the other process resolved them while this one waited
            self._resolve_jars(marker)

    def _resolve_jars(self, marker: Path) -> None:
        if shutil.which("mvn") is None:
            raise StackError("Maven (mvn) is needed to fetch Kafka's jars: install maven and Java 17+")
        log.info("resolving Kafka jars from Maven Central into %s", self.lib)
        shutil.rmtree(self.lib, ignore_errors=True)
        command = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(KAFKA_POM),
            "org.apache.maven.plugins:maven-dependency-plugin:3.7.1:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={self.lib}",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"mvn could not resolve Kafka's jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        marker.write_text(KAFKA_POM.read_text())

    def _java(self, main_class: str, *args: str, log_config: bool = True) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StackError("Java 17+ is needed to run Kafka")
        command = [java, "-Xmx512m", "-Xms512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]
        if log_config:
            command.append(f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}")
        return command + ["-cp", f"{self.lib}/*", main_class, *args]

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        port = self.settings.kafka_port
        controller = self.settings.kafka_controller_port
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
            "log.dirs": str(self.folder / "data"),
            "num.partitions": str(self.settings.topic_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Lets consumers ask for sessions down to 1 s (FERRY_KAFKA_SESSION_TIMEOUT_MS), a stock broker 6 s.
            "group.min.session.timeout.ms": "1000",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            # A lone node has no one to hand leadership to; controlled shutdown would only wait.
            "controlled.shutdown.enable": "false",
        }
        if self.settings.kafka_secured:
            from shared.local.kafka_security import KafkaSecrets, broker_properties

            secrets = KafkaSecrets(self.settings.home)
            secrets.ensure()
            properties |= broker_properties(secrets, port, controller)
        config = self.folder / "server.properties"
        config.touch(mode=0o600)  # a secured broker's holds its admin password and key
        config.chmod(0o600)
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.folder / "log4j2.properties").write_text(
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.org.name = org.apache.kafka\nlogger.org.level = WARN\n"
            "logger.started.name = kafka.server.KafkaRaftServer\nlogger.started.level = INFO\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )
        return config

    def format_storage(self, config: Path) -> None:
        """Format the log directory once, as a standalone KRaft controller."""
        if (self.folder / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # "--cluster-id=ID": an id may start with "-", which as a separate argument reads as an option.
        scram: list[str] = []
        if self.settings.kafka_secured:
            from shared.local.kafka_security import KafkaSecrets, format_arguments

            scram = format_arguments(KafkaSecrets(self.settings.home))
        command = self._java(
            "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config), "--standalone", *scram
        )
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def pid(self) -> int | None:
        """The broker's pid while it runs."""
        return _read_pid(self.pid_file)

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout_s: float = 90) -> None:
        """Start the broker unless it runs; return once it answers metadata requests."""
        if self.is_running():
            log.info("Kafka already running (pid %s)", _read_pid(self.pid_file))
        else:
            self.ensure_jars()
            config = self.write_config()
            self.format_storage(config)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("ab") as out:
                process = subprocess.Popen(
                    self._java("kafka.Kafka", str(config)),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.pid_file.write_text(str(process.pid))
            log.info("Kafka starting on %s (pid %s)", self.settings.kafka_bootstrap, process.pid)
        _wait(self.answers, "Kafka", timeout_s, self.log_file)
        if self.settings.kafka_secured:
            from shared.local.kafka_security import provision

            provision(self.admin_settings)

    def answers(self) -> bool:
        """True when the broker answers a metadata request (the readiness check)."""
        if not self.is_running():
            raise StackError("Kafka exited during start-up; see " + str(self.log_file) + self._log_tail())
        return kafka_answers(self.admin_settings)

    def _log_tail(self) -> str:
        if not self.log_file.exists():
            return ""
        return "\n" + "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> bool:
        return _terminate(self.pid_file, "Kafka")


@dataclass
class Stack:
    """Kafka and PostgreSQL together (and SeaweedFS for an ``s3://`` store): what ``ferry stack up`` starts."""

    settings: FerrySettings

    def __post_init__(self) -> None:
        from shared.local.postgres import EmbeddedPostgres
        from shared.local.seaweedfs import SeaweedFS, wants_local_s3

        self.kafka = KafkaBroker(self.settings)
        # With FERRY_DATABASE_URL set, that server is used and none is started.
        self.postgres = None if self.settings.database_url else EmbeddedPostgres(self.settings)
        # An s3:// store with an endpoint of the user's own is theirs; without one, a local SeaweedFS serves it.
        self.seaweedfs = SeaweedFS(self.settings) if wants_local_s3(self.settings) else None

    @property
    def database_url(self) -> str:
        return self.postgres.url if self.postgres else self.settings.resolved_database_url

    def up(self) -> None:
        """Start what is not running, then create the topics."""
        from shared.topics import ensure_topics

        self.settings.home.mkdir(parents=True, exist_ok=True)
        if self.postgres:
            self.postgres.start()
        if self.seaweedfs:
            self.seaweedfs.start()
        self.kafka.start()
        ensure_topics(self.kafka.admin_settings)

    def down(self) -> list[str]:
        """Stop what ``up`` started; returns the names of what was stopped."""
        stopped = []
        if self.kafka.stop():
            stopped.append("kafka")
        if self.postgres and self.postgres.stop():
            stopped.append("postgres")
        if self.seaweedfs and self.seaweedfs.stop():
            stopped.append("seaweedfs")
        return stopped

    def status(self) -> dict[str, str]:
        kafka = "running" if self.kafka.is_running() and kafka_answers(self.kafka.admin_settings) else "stopped"
        if self.postgres is None:
            postgres = f"external ({self.settings.database_url})"
        else:
            postgres = "running" if self.postgres.is_running() else "stopped"
        parts = {"kafka": f"{kafka} ({self.settings.kafka_bootstrap})", "postgres": postgres}
        if self.seaweedfs:
            state = "running" if self.seaweedfs.pid() and self.seaweedfs.answers() else "stopped"
            parts["seaweedfs"] = f"{state} ({self.seaweedfs.endpoint_url})"
        return parts
