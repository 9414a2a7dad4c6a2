"""Settings shared by every Ferry process (environment prefix ``FERRY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class FerrySettings(BaseSettings):
    """What every service and the CLI need to find the stack. Validated when built."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(".ferry"), description="State folder: Kafka logs, pgdata, artifacts, logs")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_controller_port: int = Field(
        default=9093, ge=1, le=65535, description="The local broker's KRaft controller port"
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
        default=None, description="The only folder csv: datasets are read from; default <home>/datasets"
    )
    cache_dir: Path | None = Field(default=None, description="Download cache (Kafka jars); default <home>/cache")
    log_level: str = Field(default="INFO", description="Log level; logs are JSON lines with trace ids")
    delivery_attempts: int = Field(
        default=3, ge=1, le=100, description="Deaths of a consumer with a message in hand before it is dead-lettered"
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

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((self.home / "artifacts").absolute())

    @property
    def resolved_datasets_root(self) -> Path:
        return (self.datasets_root or self.home / "datasets").absolute()

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    def topic(self, name: str) -> str:
        """Full topic name for a design topic name such as ``model.trained``."""
        return f"{self.topic_prefix}{name}"
