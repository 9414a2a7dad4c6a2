"""The one place that builds the gateway's parts: store, sessions, fleet, request path, registry client,
consumer loop. Tests pass a deployment source of their own, or no consumer loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from services.gateway.adapters.access_log import AccessLog
from services.gateway.adapters.metrics import GatewayMetrics
from services.gateway.adapters.onnx_runtime import load_model
from services.gateway.adapters.registry import DeploymentSource, RegistryClient, load_with_retries
from services.gateway.batching import Batcher
from services.gateway.domain import Admission, RateLimiter, VersionSpec, batchable
from services.gateway.fleet import Fleet, LoadedVersion
from services.gateway.handlers import Deployer
from services.gateway.service import Inference
from services.gateway.settings import GatewaySettings
from shared.artifacts import ArtifactStore
from shared.kafka import ConsumerLoop

log = logging.getLogger("services.gateway")

LoopFactory = Callable[["Gateway"], ConsumerLoop]


@dataclass
class Gateway:
    """A wired gateway. ``start`` (on the event loop) loads the registry's deployments in a thread, then
    follows ``deployment.changed``; ``ready`` turns true once the first load is done."""

    settings: GatewaySettings
    fleet: Fleet
    inference: Inference
    deployer: Deployer
    metrics: GatewayMetrics
    source: DeploymentSource | None
    loop_factory: LoopFactory | None
    loaded: threading.Event = field(default_factory=threading.Event)
    stop_event: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    consumer: ConsumerLoop | None = None
    access_log: AccessLog | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        consumer_alive = self.loop_factory is None or any(
            t.name == "consumer-loop" and t.is_alive() for t in self._threads
        )
        return self.loaded.is_set() and consumer_alive and not self.failed

    async def start(self) -> None:
        self.deployer.loop = asyncio.get_running_loop()
        if self.access_log is not None:
            self.access_log.start()
        thread = threading.Thread(target=self._guarded(self._follow), name="deployments", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _follow(self) -> None:
        if self.source is not None:
            deployments = load_with_retries(
                self.source, timeout_s=self.settings.startup_timeout_s, stop=self.stop_event.is_set
            )
            for deployment in deployments:
                self.deployer.apply(deployment)
            log.info("loaded %d deployments from the registry", len(deployments))
        self.loaded.set()
        if self.loop_factory is not None and not self.stop_event.is_set():
            # Started only now: the group reads from the earliest offset and skips revisions already
            # served, so no change between the registry's answer and the group's join is missed.
            self.consumer = self.loop_factory(self)
            self.consumer.stop_event = self.stop_event
            thread = threading.Thread(target=self._guarded(self.consumer.run), name="consumer-loop", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                if self.stop_event.is_set():
                    log.info("%s ended while stopping", threading.current_thread().name)
                    return
                log.exception("%s crashed; stopping the gateway", threading.current_thread().name)
                self._fail()
                raise
            if threading.current_thread().name == "consumer-loop" and not self.stop_event.is_set():
                log.error("the consumer loop ended unexpectedly; stopping the gateway")
                self._fail()

        return run

    def _fail(self) -> None:
        self.failed = True
        if self.loop_factory is not None:  # a real process: end it, and __main__ exits non-zero
            os.kill(os.getpid(), signal.SIGTERM)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.to_thread(self._join)
        await self.inference.drain_shadows()
        await self.fleet.close()
        if self.access_log is not None:
            await self.access_log.stop()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(self.settings.shutdown_timeout_s)

    def queue_depths(self) -> Iterator[tuple[str, int, int]]:
        for name, state in list(self.fleet.models.items()):
            for version in state.loaded():
                yield name, version.version, version.batcher.depth


def version_loader(
    settings: GatewaySettings, metrics: GatewayMetrics
) -> Callable[[str, VersionSpec, bytes], LoadedVersion]:
    """Verified bytes → a loaded, warmed-up version with its batching queue."""

    def load(model_name: str, spec: VersionSpec, data: bytes) -> LoadedVersion:
        config = settings.batch_config(model_name)
        can_batch = batchable(spec.signature)
        sizes = (
            (1, config.max_batch_size) if can_batch and settings.warmup_batch and config.max_batch_size > 1 else (1,)
        )
        model = load_model(
            data, spec.signature, device=settings.device, threads=settings.ort_threads, warmup_batches=sizes
        )
        log.info("loaded %s v%s on %s", model_name, spec.version, model.provider)
        metrics.prepare(model_name, spec.version)
        batcher = Batcher(
            model.run,
            config,
            batchable=can_batch,
            name=f"{model_name}-v{spec.version}",
            on_batch=lambda size: metrics.batch(model_name, spec.version, size),
            inline_below_ms=settings.inline_run_ms,
        )
        return LoadedVersion(model_name=model_name, spec=spec, model=model, batcher=batcher)

    return load


def bootstrap(
    settings: GatewaySettings | None = None,
    *,
    source: DeploymentSource | None = None,
    store: ArtifactStore | None = None,
    loop_factory: LoopFactory | None = None,
    follow_kafka: bool = True,
) -> Gateway:
    """Build the gateway; tests pass a deployment source, a store, or ``follow_kafka=False``."""
    settings = settings or GatewaySettings()
    fleet = Fleet(drain_timeout_s=settings.drain_timeout_s)
    admission = Admission(settings.max_inflight, shadow_share=settings.shadow_share, canary_share=settings.canary_share)
    holder: list[Gateway] = []
    metrics = GatewayMetrics(
        inflight=lambda: admission.inflight, queue_depths=lambda: holder[0].queue_depths() if holder else iter(())
    )
    inference = Inference(
        fleet,
        admission,
        RateLimiter(settings.rate_limit_rps, settings.burst),
        metrics,
        max_deadline_s=settings.deadline_ms / 1000,
    )
    store = store or ArtifactStore.from_settings(settings.ferry)
    deployer = Deployer(
        fleet,
        store,
        version_loader(settings, metrics),
        keep_previous=settings.keep_previous,
        on_outcome=lambda model, outcome: metrics.count("deployments", (model, outcome)),
    )
    if source is None:
        source = RegistryClient(settings.registry_url, timeout_s=settings.registry_timeout_s)
    if loop_factory is None and follow_kafka:
        from services.gateway.entrypoints.consumer import build_consumer_loop

        loop_factory = build_consumer_loop
    gateway = Gateway(
        settings,
        fleet,
        inference,
        deployer,
        metrics,
        source,
        loop_factory,
        access_log=AccessLog() if settings.access_log else None,
    )
    holder.append(gateway)
    return gateway
