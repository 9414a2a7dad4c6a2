"""Helpers of the gateway's tests: a real gateway app on a free port (uvicorn in a thread), real ONNX
models in a real artifact store, deployments applied through the same deployer the consumer loop uses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, wait_for

from services.gateway.bootstrap import Gateway, bootstrap
from services.gateway.domain import Deployment, VersionSpec
from services.gateway.entrypoints.api import create_app
from services.gateway.residency import FindVersion
from services.gateway.sample_models import classifier_bytes, classifier_signature
from services.gateway.settings import GatewaySettings
from shared.artifacts import ArtifactStore
from shared.settings import FerrySettings
from shared.telemetry import setup_telemetry


def ensure_telemetry() -> None:
    """One SDK meter provider for the test session (OpenTelemetry keeps the first one set)."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        setup_telemetry("gateway-test", json_logs=False)


@dataclass
class ListSource:
    """The registry's deployments, as a test states them."""

    items: list[Deployment] = field(default_factory=list)

    def deployments(self) -> list[Deployment]:
        return list(self.items)


def store_version(
    store: ArtifactStore, version: int, *, seed: int | None = None, features: int = 8, classes: int = 3
) -> VersionSpec:
    """A sample classifier stored as ``version`` (its weights seeded by ``seed``, default the version)."""
    data = classifier_bytes(features, classes, seed=version if seed is None else seed)
    _, sha256, size = store.put_bytes(data)
    return VersionSpec(version, sha256, size, classifier_signature(features, classes))


@dataclass
class Served:
    gateway: Gateway
    url: str
    store: ArtifactStore

    def apply(self, deployment: Deployment) -> str:
        return self.gateway.deployer.apply(deployment)

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)


@contextmanager
def served_gateway(
    tmp_path: Path,
    deployments: list[Deployment] | None = None,
    store: ArtifactStore | None = None,
    find_version: FindVersion | None = None,
    **overrides: Any,
) -> Iterator[Served]:
    """A gateway serving ``deployments`` (applied at its start) on a free port, until the block ends;
    ``find_version`` answers for pinned versions no deployment serves, as the registry does."""
    ensure_telemetry()
    store = store or ArtifactStore(str(tmp_path / "artifacts"))
    port = free_port()
    settings = GatewaySettings(
        ferry=FerrySettings(home=tmp_path, artifact_root=store.root), port=port, device="cpu", **overrides
    )
    source = ListSource(list(deployments or []))
    gateway = bootstrap(settings, source=source, store=store, follow_kafka=False, find_version=find_version)
    config = uvicorn.Config(
        create_app(gateway), host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), what=f"the gateway at {url}")
        yield Served(gateway, url, store)
    finally:
        server.should_exit = True
        thread.join(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def infer_json(rows: list[list[float]], *, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": [value for row in rows for value in row],
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def samples(url: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric (by its exposed name) whose labels include ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                found.append((sample.labels, sample.value))
    return found


def total(url: str, name: str, **labels: str) -> float:
    return sum(value for _, value in samples(url, name, **labels))
