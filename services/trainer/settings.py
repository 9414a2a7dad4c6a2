"""The trainer's settings: environment prefix ``FERRY_TRAINER_``, plus the shared ``FERRY_`` ones."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.trainer.domain import StreamingOptions
from shared.settings import FerrySettings


class TrainerSettings(BaseSettings):
    """What a trainer process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_TRAINER_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    registry_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias=AliasChoices("FERRY_REGISTRY_URL", "FERRY_TRAINER_REGISTRY_URL", "registry_url"),
        description="Registry REST base URL, for the champion a distillation learns from",
    )
    registry_timeout_s: float = Field(default=10.0, gt=0, le=300)
    consumer_group: str = Field(default="trainer", min_length=1)
    budget_s: float = Field(default=1800.0, gt=0, description="Wall-clock limit of one training run")
    max_world_size: int = Field(
        default=8, ge=1, le=64, description="Largest DDP world of one trainer; a larger one goes to the cluster if any"
    )
    cluster: str = Field(
        default="",
        description="Where larger worlds train as PyTorchJobs: '' (nowhere), 'in-cluster' or a kubeconfig path",
    )
    job_max_world_size: int = Field(default=64, ge=1, le=1024, description="Largest world of a PyTorchJob")
    job_image: str = Field(default="", description="The Ferry image the PyTorchJob's pods run")
    job_namespace: str = Field(default="default", min_length=1, description="Namespace of the PyTorchJobs")
    job_service_account: str = Field(default="", description="ServiceAccount of the job's pods ('': the default)")
    job_config_maps: list[str] = Field(
        default_factory=list, description="ConfigMaps whose FERRY_ settings the job's pods read (the store's)"
    )
    job_secrets: list[str] = Field(default_factory=list, description="Secrets the job's pods read (the store's keys)")
    job_cpu: str = Field(default="1", min_length=1, description="CPU of each job pod (request and limit)")
    job_memory: str = Field(default="2Gi", min_length=1, description="Memory of each job pod (request and limit)")
    job_gpus: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu of each job pod")
    job_backoff_limit: int = Field(default=3, ge=0, le=100, description="Restarts of a job before it fails")
    job_watch_timeout_s: int = Field(
        default=15, ge=1, le=600, description="How long one watch of the jobs lasts before it is renewed (a stop waits)"
    )
    work_dir: Path | None = Field(default=None, description="Scratch folder for runs; default <home>/trainer/work")
    metrics_port: int = Field(
        default=8083, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics; 0 turns them off"
    )
    host: str = Field(default="127.0.0.1", description="Interface of /healthz, /readyz and /metrics")
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0, description="How long a stop waits for the run in hand before leaving it to a redelivery"
    )
    # One intra-op thread by default: Ferry's models are small, trainers scale out as processes, and
    # on a shared machine torch's spinning thread pool slows a run down 5-10x when cores are busy.
    torch_threads: int = Field(default=1, ge=1, le=256, description="torch intra-op threads of the process")
    stream_workers: int = Field(
        default=1, ge=0, le=64, description="DataLoader workers reading a parquet: dataset's batches (0: in-process)"
    )
    stream_shuffle_rows: int = Field(
        default=65_536, ge=0, le=10_000_000, description="Rows of a parquet: dataset shuffled together (0: file order)"
    )
    stream_validation_rows: int = Field(
        default=100_000, ge=1, description="Validation rows of a parquet: dataset each epoch's loss is streamed over"
    )
    stream_statistics_rows: int = Field(
        default=1_000_000, ge=1, description="Training rows a parquet: dataset's input standardization comes from"
    )

    @property
    def streaming(self) -> StreamingOptions:
        """How parquet: datasets are streamed (services.trainer.streaming)."""
        return StreamingOptions(
            loader_workers=self.stream_workers,
            shuffle_rows=self.stream_shuffle_rows,
            validation_rows=self.stream_validation_rows,
            statistics_rows=self.stream_statistics_rows,
        )

    @model_validator(mode="after")
    def _a_cluster_needs_an_image(self) -> TrainerSettings:
        if self.cluster and not self.job_image:
            raise ValueError("FERRY_TRAINER_CLUSTER needs FERRY_TRAINER_JOB_IMAGE: the image the job's pods run")
        return self

    @property
    def cluster_enabled(self) -> bool:
        return bool(self.cluster)

    @property
    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.ferry.state_dir("trainer") / "work"

    @property
    def max_poll_interval_ms(self) -> int:
        """Kafka's poll deadline: a run may take its whole budget before the next poll."""
        return int((self.budget_s + 600) * 1000)
