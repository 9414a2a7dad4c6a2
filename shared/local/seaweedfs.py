"""A local S3-compatible object store: SeaweedFS (Apache-2.0), one ``weed mini`` process, for an ``s3://`` store.

The ``weed`` binary is built once from its Go module into ``~/.cache/ferry/seaweedfs/<version>/`` (as Kafka's
jars are resolved once from Maven Central), then started with its data under the stack's home, on ports
chosen free at the first start and kept in ``ports.json``, tracked by a pid file, and stopped by ``down``.
Its one identity's key pair is generated once into ``<home>/secrets/s3-credentials`` (mode 0600); the
services get it through their environment, as boto3 expects it (``AWS_ACCESS_KEY_ID`` / ``…SECRET…``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.local.ports import free_port
from shared.s3 import S3Options, S3Unavailable, classified, s3_client, split_root
from shared.settings import FerrySettings

log = logging.getLogger(__name__)

SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
SEAWEEDFS_CACHE = Path.home() / ".cache" / "ferry" / "seaweedfs"
# weed mini's listeners; each gRPC port is pinned too (its default, HTTP port + 10000, may not exist).
PORTS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class SeaweedError(RuntimeError):
    """SeaweedFS could not be built or started; the message says what to do."""


def weed_path(cache: Path = SEAWEEDFS_CACHE, version: str = SEAWEEDFS_VERSION) -> Path:
    """Where the ``weed`` binary of ``version`` is kept once built."""
    return cache / version / "weed"


def weed_binary(cache: Path = SEAWEEDFS_CACHE, version: str = SEAWEEDFS_VERSION) -> Path:
    """The ``weed`` binary of ``version``, built from its Go module on first use (minutes), then reused."""
    binary = weed_path(cache, version)
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise SeaweedError("Go 1.26+ is needed to build SeaweedFS (the local S3 store): install it from go.dev")
    log.info("building SeaweedFS %s from its Go module (once; a few minutes)", version)
    env = os.environ | {"GOFLAGS": "-mod=mod"}
    found = _run([go, "mod", "download", "-json", f"{SEAWEEDFS_MODULE}@{version}"], env=env)
    # A writable copy of this process's own (two first uses may build at once): the module cache is read-only.
    source = cache / f"src-{version}-{os.getpid()}"
    partial = binary.with_name(f"weed.partial-{os.getpid()}")
    try:
        shutil.copytree(json.loads(found)["Dir"], source)
        for folder, _, files in os.walk(source):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        partial.parent.mkdir(parents=True, exist_ok=True)
        _run([go, "build", "-o", str(partial), "./weed"], env=env, cwd=source)
        partial.rename(binary)  # whole or absent: an interrupted build is redone, never half-used
    finally:
        shutil.rmtree(source, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return binary


def _run(command: list[str], *, env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        raise SeaweedError(f"{' '.join(command[:3])} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result.stdout


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str

    def environment(self) -> dict[str, str]:
        """As boto3 (and every other S3 client) reads them."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}

    def __repr__(self) -> str:
        return "S3Credentials(<redacted>)"


def ensure_credentials(path: Path) -> S3Credentials:
    """The key pair in ``path`` (lines ``AWS_ACCESS_KEY_ID=…``), generated once with mode 0600."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        pair = S3Credentials("ferry" + secrets.token_hex(8), secrets.token_urlsafe(30))
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # a concurrent `up` made it first: read theirs
            pass
        else:
            with os.fdopen(descriptor, "w") as out:
                out.write("".join(f"{key}={value}\n" for key, value in pair.environment().items()))
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return S3Credentials(values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])


@dataclass
class SeaweedFS:
    """One ``weed mini`` (master, volume, filer, S3) serving the stack's ``s3://`` artifact store."""

    settings: FerrySettings

    @property
    def folder(self) -> Path:
        return self.settings.home.absolute() / "seaweedfs"

    @property
    def pid_file(self) -> Path:
        return self.folder / "weed.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.home.absolute() / "logs" / "seaweedfs.log"

    @property
    def credentials_file(self) -> Path:
        return self.settings.home.absolute() / "secrets" / "s3-credentials"

    def ports(self) -> dict[str, int]:
        """Free ports chosen at the first start and kept, so a later ``up`` finds the same endpoint."""
        saved = self.folder / "ports.json"
        if saved.exists():
            return {key: int(value) for key, value in json.loads(saved.read_text()).items()}
        ports = {name: free_port() for name in PORTS}
        self.folder.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(ports))
        return ports

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports()['s3.port']}"

    def credentials(self) -> S3Credentials:
        return ensure_credentials(self.credentials_file)

    def environment(self) -> dict[str, str]:
        """What a service needs to reach this store: the endpoint and the key pair."""
        return {"FERRY_S3_ENDPOINT_URL": self.endpoint_url} | self.credentials().environment()

    def client(self) -> Any:
        """A boto3 client with this store's key pair."""
        return s3_client(self.options())

    def options(self, **changes: Any) -> S3Options:
        """How to reach this store, key pair included (for the stack's own code and its tests)."""
        credentials = self.credentials()
        options = S3Options(
            endpoint_url=self.endpoint_url,
            region="us-east-1",
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
        )
        return dataclasses.replace(options, **changes)

    def pid(self) -> int | None:
        from shared.local.stack import _read_pid

        return _read_pid(self.pid_file)

    def start(self, timeout_s: float = 120) -> None:
        """Start unless it runs; return once the store's bucket answers with the generated key pair."""
        from shared.local.stack import _wait

        if self.pid() is None:
            self._launch()
        _wait(self.ready, "SeaweedFS", timeout_s, self.log_file)

    def _launch(self) -> None:
        binary = weed_binary()
        ports = self.ports()
        credentials = self.credentials()
        identities = {
            "identities": [
                {
                    "name": "ferry",
                    "credentials": [
                        {"accessKey": credentials.access_key_id, "secretKey": credentials.secret_access_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.folder / "s3.json"
        config.unlink(missing_ok=True)
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(identities, out)
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        flags = [f"-{name}={port}" for name, port in ports.items()]
        disabled = [
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.port.legacy=0",
        ]
        command = [str(binary), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}"]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        clean_env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        with self.log_file.open("ab") as out:
            process = subprocess.Popen(
                [*command, *flags, *disabled],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=clean_env,
                cwd=self.folder,
            )
        self.pid_file.write_text(str(process.pid))
        log.info("SeaweedFS starting, S3 on %s (pid %s)", self.endpoint_url, process.pid)

    def ready(self) -> bool:
        """True once the S3 endpoint accepts the key pair and holds the store's bucket (created here)."""
        if self.pid() is None:
            raise SeaweedError(f"SeaweedFS exited during start-up; see {self.log_file}")
        try:
            self.ensure_bucket(split_root(self.settings.resolved_artifact_root)[0])
        except S3Unavailable:
            return False
        return True

    def answers(self) -> bool:
        """True when the S3 endpoint answers a signed request (``ferry status``'s health)."""
        try:
            with classified("a bucket listing"):
                self.client().list_buckets()
        except S3Unavailable:
            return False
        return True

    def ensure_bucket(self, bucket: str) -> None:
        client = self.client()
        try:
            with classified(f"bucket {bucket}"):
                client.head_bucket(Bucket=bucket)
        except FileNotFoundError:
            with classified(f"creating bucket {bucket}"):
                client.create_bucket(Bucket=bucket)

    def stop(self) -> bool:
        from shared.local.stack import _terminate

        return _terminate(self.pid_file, "SeaweedFS")


def wants_local_s3(settings: FerrySettings) -> bool:
    """An ``s3://`` store with no endpoint of the user's own: the local stack serves it with SeaweedFS."""
    if not settings.resolved_artifact_root.startswith("s3://"):
        return False
    return not (settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
