"""Settings shared by every Ferry process (environment prefix ``FERRY_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaCredentialMissing(ValueError):
    """SASL_SSL without a usable credential; the message names the setting to fix."""


class FerrySettings(BaseSettings):
    """What every service and the CLI need to find the stack. Validated when built."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(".ferry"), description="State folder: Kafka logs, pgdata, artifacts, logs")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_controller_port: int = Field(
        default=9093, ge=1, le=65535, description="The local broker's KRaft controller port"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description=(
            "PLAINTEXT (the local default, loopback only) or SASL_SSL: TLS plus SASL/SCRAM, one credential per "
            "service; with SASL_SSL `make up` secures its own broker (certificates, users, ACLs)"
        ),
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        default="SCRAM-SHA-512", description="The SASL mechanism with SASL_SSL"
    )
    kafka_username: str | None = Field(
        default=None,
        description="This process's Kafka user with SASL_SSL (make up gives each service its own; the CLI: operator)",
    )
    kafka_password_file: Path | None = Field(
        default=None, description="File holding that user's password (never the password itself in a variable)"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA that signed the broker's certificate; unset: the system's"
    )
    topic_prefix: str = Field(default="ferry.", description="Prefix of every topic name")
    topic_partitions: int = Field(
        default=3, ge=1, le=1000, description="Partitions of each topic `ferry stack up` / `ferry topics` creates"
    )
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; when unset the embedded server is started and used"
    )
    postgres_port: int = Field(default=55432, ge=1, le=65535, description="Port of the embedded PostgreSQL")
    artifact_root: str | None = Field(
        default=None,
        description=(
            "Artifact store: a folder, s3://bucket/prefix (an S3-compatible object store) or another fsspec URI; "
            "default <home>/artifacts"
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description=(
            "Endpoint of the S3-compatible store (SeaweedFS, MinIO, Ceph); unset: AWS_ENDPOINT_URL_S3, "
            "AWS_ENDPOINT_URL, else AWS itself. Credentials come only from AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (or any other boto3 source), never from a setting or a URI"
        ),
    )
    s3_region: str | None = Field(
        default=None, description="Region of the S3 store; unset: AWS_REGION, AWS_DEFAULT_REGION"
    )
    s3_multipart_threshold_bytes: int = Field(
        default=64 << 20,
        ge=5 << 20,
        le=5 << 30,
        description="Artifacts larger than this are uploaded to S3 in parts of this size (S3's minimum part: 5 MiB)",
    )
    datasets_root: Path | None = Field(
        default=None, description="The only folder csv: and parquet: datasets are read from; default <home>/datasets"
    )
    datasets_s3_root: str | None = Field(
        default=None,
        description=(
            "The only s3://bucket/prefix parquet: datasets are read from (on FERRY_S3_ENDPOINT_URL, with boto3's "
            "credentials); unset: s3:// datasets are refused"
        ),
    )
    cache_dir: Path | None = Field(default=None, description="Download cache (Kafka jars); default <home>/cache")
    log_level: str = Field(default="INFO", description="Log level; logs are JSON lines with trace ids")
    delivery_attempts: int = Field(
        default=3, ge=1, le=100, description="Deaths of a consumer with a message in hand before it is dead-lettered"
    )
    kafka_session_timeout_ms: int = Field(
        default=6_000,
        ge=1_000,
        le=300_000,
        description=(
            "How soon a consumer that died (kill -9) hands its partitions on; at least the broker's "
            "group.min.session.timeout.ms (6 s on a stock broker, 1 s on the local one)"
        ),
    )
    replica: int = Field(
        default=1, ge=1, le=64, description="This process's replica number among its service's (make up sets it)"
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"kafka_bootstrap entries must be host:port, got {server!r}")
        return value

    @property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server: the one the local broker listens on."""
        return int(self.kafka_bootstrap.split(",")[0].rpartition(":")[2])

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: FERRY_DATABASE_URL, or the embedded server's."""
        if self.database_url:
            return self.database_url
        return f"postgresql+psycopg://ferry@127.0.0.1:{self.postgres_port}/ferry"

    def state_dir(self, service: str) -> Path:
        """A service's local state folder: ``<home>/<service>``, ``<home>/<service>-<k>`` for replica k > 1."""
        return self.home / (service if self.replica == 1 else f"{service}-{self.replica}")

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((self.home / "artifacts").absolute())

    @property
    def resolved_datasets_root(self) -> Path:
        return (self.datasets_root or self.home / "datasets").absolute()

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def kafka_secured(self) -> bool:
        return self.kafka_security_protocol != "PLAINTEXT"

    def kafka_client_options(self) -> dict[str, Any]:
        """kafka-python's connection options for this process: the bootstrap servers and, with SASL_SSL, TLS
        and this process's SCRAM credential (the password read from its file now, not kept in the settings)."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap}
        if not self.kafka_secured:
            return options
        if not self.kafka_username or self.kafka_password_file is None:
            raise KafkaCredentialMissing(
                "FERRY_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs FERRY_KAFKA_USERNAME and FERRY_KAFKA_PASSWORD_FILE"
            )
        try:
            password = self.kafka_password_file.read_text().strip()
        except OSError as error:
            raise KafkaCredentialMissing(
                f"FERRY_KAFKA_PASSWORD_FILE cannot be read ({error.strerror}): {self.kafka_password_file}"
            ) from None
        options |= {
            "security_protocol": self.kafka_security_protocol,
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_plain_username": self.kafka_username,
            "sasl_plain_password": password,
        }
        if self.kafka_ssl_cafile is not None:
            options["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return options

    def topic(self, name: str) -> str:
        """Full topic name for a design topic name such as ``model.trained``."""
        return f"{self.topic_prefix}{name}"
