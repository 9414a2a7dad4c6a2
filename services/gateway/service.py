"""The request path: rate limit, route, admit, run (batched, within the deadline), fall back, shadow;
and :class:`Gateway`, the wired whole that the HTTP edge serves and the runtime runs.

Every step records on the request's :class:`Trail` which version served it and why, for its span, its
access-log line and its metrics; the HTTP edge only decodes, calls :meth:`Inference.infer` and encodes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.gateway.adapters.access_log import AccessLog
from services.gateway.adapters.inference_log import InferenceLog
from services.gateway.adapters.metrics import GatewayMetrics
from services.gateway.adapters.registry import DeploymentSource
from services.gateway.domain import (
    Admission,
    DeadlineExceeded,
    Fault,
    GatewayError,
    InvalidInput,
    Overloaded,
    RateLimited,
    RateLimiter,
    Route,
    RunFailed,
    VersionNotFound,
    WorkKind,
    check_inputs,
    choose_version,
)
from services.gateway.fleet import Fleet, LoadedVersion, ModelState
from services.gateway.handlers import Deployer
from services.gateway.residency import Residency
from services.gateway.settings import GatewaySettings
from services.gateway.statistics import InferenceStatistics
from shared.events import Signature
from shared.kafka import ConsumerLoop, Publisher
from shared.regression import as_values, bin_of
from shared.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(slots=True)  # not frozen: a frozen dataclass' __init__ costs three times more, once per request
class Tensor:
    """A decoded input tensor: its name, OIP datatype, shape and data (already shaped)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass
class Trail:
    """What happened to one request: filled in as it goes, read by the span, the log and the response."""

    request_id: str
    model: str
    version: int | None = None
    route: Route | None = None
    outcome: str = "error"
    failed_over_from: int | None = None


@dataclass(slots=True)
class InferResult:
    version: int
    route: Route
    output_names: list[str]
    outputs: list[np.ndarray]
    labels: list[str] | None = None  # the class names of the first output, from the answering version's signature
    regressor: bool = False  # the answering version predicts a value: no class scores to classify


@dataclass
class Inference:
    """The request path over the fleet; lives on the event loop's thread."""

    fleet: Fleet
    admission: Admission
    limiter: RateLimiter
    metrics: GatewayMetrics
    max_deadline_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    draw: Callable[[], float] = random.random
    statistics: InferenceStatistics = field(default_factory=InferenceStatistics)
    residency: Residency | None = None
    """Loads versions that are not resident for the requests that need them (None: all are, always)."""
    inference_log: InferenceLog | None = None
    """Samples answered requests to ``inference.logged`` (None: logging off)."""
    _shadows: set[asyncio.Task[None]] = field(default_factory=set)

    async def infer(
        self,
        trail: Trail,
        tensors: Sequence[Tensor],
        *,
        pinned: int | None,
        route_key: str,
        client: str,
        deadline_s: float | None = None,
    ) -> InferResult:
        """Answer one request; raises a GatewayError subclass when it cannot be answered."""
        started = self.clock()
        wait = self.limiter.check(client, started)
        if wait > 0:
            self.metrics.count("rate_limited", (trail.model,))
            raise RateLimited(wait)
        state = self.fleet.get(trail.model)
        if state is None or state.champion is None and state.challenger is None and pinned is None:
            raise self.fleet.missing(trail.model)
        target, route = await self._route(state, pinned, route_key)
        trail.version, trail.route = target.version, route
        try:
            check_inputs(target.spec.signature, [(t.name, t.datatype, t.shape) for t in tensors])
        except InvalidInput:
            trail.outcome = "client_error"
            self.metrics.request(trail.model, target.version, route, "client_error", None)
            raise
        kind: WorkKind = "canary" if route == "canary" else "champion"
        if not self.admission.try_enter(kind):
            self.metrics.count("shed", (trail.model, kind))
            raise Overloaded(kind)
        feeds = {tensor.name: tensor.data for tensor in tensors}
        deadline = started + min(deadline_s or self.max_deadline_s, self.max_deadline_s)
        try:
            outputs = await self._run_or_fall_back(trail, state, target, feeds, deadline)
        finally:
            self.admission.leave()
        served = target if trail.version == target.version else state.find(trail.version or target.version)
        if route == "champion" and state.deployment.shadow and state.challenger is not None:
            self._mirror(trail.model, state.challenger, feeds, outputs, deadline)
        answered = served or target
        result = InferResult(
            version=trail.version or target.version,
            route=trail.route or route,
            output_names=answered.model.output_names,
            outputs=outputs,
            labels=answered.spec.signature.labels,
            regressor=answered.spec.signature.is_regressor,
        )
        if self.inference_log is not None:  # a draw, and for a sampled request one append: see inference_log.py
            self.inference_log.offer(
                trail.model,
                trail.request_id,
                result.version,
                result.route,
                state.deployment.revision,
                tensors,
                (result.output_names, outputs),
            )
        return result

    async def _route(self, state: ModelState, pinned: int | None, route_key: str) -> tuple[LoadedVersion, Route]:
        if pinned is not None:
            version = state.find(pinned)
            if version is None and self.residency is not None:
                version = await self.residency.pinned(state.deployment.model_name, pinned, self.max_deadline_s)
            if version is None:
                raise VersionNotFound(state.deployment.model_name, str(pinned))
            return version, "pinned"
        champion, challenger = state.champion, state.challenger
        if champion is None:
            assert challenger is not None
            return challenger, "canary"
        number, route = choose_version(
            champion.version, challenger.version if challenger else None, state.deployment.canary_weight, route_key
        )
        return (challenger if route == "canary" and challenger is not None else champion), route

    async def _run_or_fall_back(
        self, trail: Trail, state: ModelState, target: LoadedVersion, feeds: dict[str, np.ndarray], deadline: float
    ) -> list[np.ndarray]:
        try:
            return await self._timed_run(trail.model, target, trail.route or "champion", feeds, deadline, trail)
        except RunFailed:
            fallback = state.previous
            if trail.route != "champion" or fallback is None or fallback is target:
                raise
            log.warning(
                "%s v%s failed; retrying request %s on v%s",
                trail.model,
                target.version,
                trail.request_id,
                fallback.version,
            )
            trail.failed_over_from, trail.version, trail.route = target.version, fallback.version, "fallback"
            return await self._timed_run(trail.model, fallback, "fallback", feeds, deadline, trail)

    async def _timed_run(
        self,
        model: str,
        version: LoadedVersion,
        route: Route,
        feeds: dict[str, np.ndarray],
        deadline: float,
        trail: Trail | None,
    ) -> list[np.ndarray]:
        started = self.clock()
        outcome = "error"
        try:
            outputs = await self._run(version, feeds, deadline)
            outcome = "ok"
            return outputs
        except DeadlineExceeded:
            outcome = "timeout"
            raise
        finally:
            if trail is not None:
                trail.outcome = outcome
            seconds = self.clock() - started
            self.metrics.request(model, version.version, route, outcome, seconds)
            rows = _rows(feeds) if version.batcher.batchable else 1
            self.statistics.finished(model, version.version, ok=outcome == "ok", rows=rows, seconds=seconds)
            if outcome == "ok":
                self.metrics.predicted(model, version.version, outputs[0], version.spec.signature)

    async def _run(self, version: LoadedVersion, feeds: dict[str, np.ndarray], deadline: float) -> list[np.ndarray]:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise DeadlineExceeded(self.max_deadline_s)
        held = False
        try:
            if self.residency is None:
                version.acquire()
            elif not self.residency.hold_resident(version):  # the common case takes no timer
                async with asyncio.timeout(remaining):
                    await self.residency.hold(version)  # loads it first: bounded by the deadline
            held = True
            left = deadline - self.clock()
            if left <= 0:
                raise DeadlineExceeded(remaining)
            fault = self.fleet.faults.get((version.model_name, version.version)) if self.fleet.faults else None
            if fault is None:
                return await version.batcher.submit(feeds, left)
            async with asyncio.timeout(left):
                await self._injected(version, fault)
                return await version.batcher.submit(feeds)
        except TimeoutError as error:
            raise DeadlineExceeded(remaining) from error
        except GatewayError:
            raise
        except Exception as error:  # noqa: BLE001 - the runtime failed on validated input: a fault
            raise RunFailed(
                f"{version.model_name} v{version.version} failed at run time: {type(error).__name__}"
            ) from error
        finally:
            if held:
                version.release()

    async def _injected(self, version: LoadedVersion, fault: Fault) -> None:
        """An injected fault's delay, then its failure (tests and the demo)."""
        if fault.delay_ms > 0:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.fails(self.draw()):
            raise RunFailed(f"injected fault in {version.model_name} v{version.version}")

    def _mirror(
        self,
        model: str,
        challenger: LoadedVersion,
        feeds: dict[str, np.ndarray],
        answer: list[np.ndarray],
        deadline: float,
    ) -> None:
        """Send the same inputs to the challenger in the background; compare, never answer with it."""
        if not self.admission.try_enter("shadow"):
            self.metrics.count("shed", (model, "shadow"))
            return
        task = asyncio.get_running_loop().create_task(self._shadow(model, challenger, feeds, answer, deadline))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self,
        model: str,
        challenger: LoadedVersion,
        feeds: dict[str, np.ndarray],
        answer: list[np.ndarray],
        deadline: float,
    ) -> None:
        try:
            outputs = await self._timed_run(model, challenger, "shadow", feeds, deadline, None)
        except GatewayError:
            return  # counted by _timed_run; a shadow's failure never reaches the client
        finally:
            self.admission.leave()
        if outputs[0].shape != answer[0].shape:
            return
        agreed = _agreed(outputs[0], answer[0], challenger.spec.signature)
        if agreed is not None:
            version = str(challenger.version)
            if agreed:
                self.metrics.count("shadow_comparisons", (model, version, "true"), agreed)
            if agreed < len(answer[0]):
                self.metrics.count("shadow_comparisons", (model, version, "false"), len(answer[0]) - agreed)

    async def drain_shadows(self) -> None:
        """Wait for the shadow runs in flight (tests and shutdown)."""
        while self._shadows:
            await asyncio.gather(*list(self._shadows), return_exceptions=True)


@dataclass
class Gateway:
    """A wired gateway. Its one worker (``follow``, run by ``runtime``) loads the deployments of its source
    (bootstrap's: ``deployment.changed`` replayed, then the registry as the fallback), then follows
    ``deployment.changed``; ``start`` and ``stop`` run on the event loop, around the worker."""

    settings: GatewaySettings
    fleet: Fleet
    inference: Inference
    deployer: Deployer
    metrics: GatewayMetrics
    source: DeploymentSource | None
    runtime: Runtime
    loop_factory: Callable[[], ConsumerLoop] | None = None
    """Builds the consumer loop of ``deployment.changed`` (bootstrap's); None: follow nothing (tests)."""
    access_log: AccessLog | None = None
    residency: Residency | None = None
    loaded: threading.Event = field(default_factory=threading.Event)
    consumer: ConsumerLoop | None = None
    feedback_publisher: Publisher | None = None
    """Where ``POST .../feedback`` publishes (None: feedback answers 503)."""
    feedback_tokens: dict[str, str] = field(default_factory=dict)
    """Token → user of who may post feedback (empty: feedback refused)."""

    def __post_init__(self) -> None:
        self.runtime.worker("deployments", self.follow)
        self.runtime.probe("deployments", self.loaded.is_set)
        if self.loop_factory is not None:
            self.runtime.probe("consumer", lambda: self.consumer is not None and self.consumer.joined.is_set())

    @property
    def stop_event(self) -> threading.Event:
        return self.runtime.stop_event

    @property
    def ready(self) -> bool:
        return self.runtime.live() and all(self.runtime.checks().values())

    async def start(self) -> None:
        """On the event loop, before the worker starts: swaps happen on this loop."""
        self.deployer.loop = asyncio.get_running_loop()
        if self.access_log is not None:
            self.access_log.start()

    def follow(self) -> None:
        if self.source is not None:
            deployments = self.source.deployments()  # bounded: see adapters/deployment_log.py
            # Lazily: ready once the deployments are known, never after a thousand serial loads.
            lazy = self.settings.lazy_start and self.residency is not None
            for deployment in deployments:
                self.deployer.apply(deployment, lazy=lazy)
            if lazy and self.residency is not None and self.deployer.loop is not None:
                self.deployer.loop.call_soon_threadsafe(self.residency.warm_deployed)
            log.info("%s %d deployments at start", "known" if lazy else "loaded", len(deployments))
        self.loaded.set()
        if self.loop_factory is None:
            self.stop_event.wait()
            return
        if self.stop_event.is_set():
            return
        # Started only now: the group reads from the earliest offset and skips revisions already
        # served, so no change between the registry's answer and the group's join is missed.
        self.consumer = self.loop_factory()
        self.consumer.run()

    async def stop(self) -> None:
        """On the event loop, after the worker has been joined: finish shadows, release the sessions."""
        await self.inference.drain_shadows()
        await self.fleet.close()
        if self.access_log is not None:
            await self.access_log.stop()

    def queue_depths(self) -> Iterator[tuple[str, int, int]]:
        for name, state in list(self.fleet.models.items()):
            for version in state.loaded():
                yield name, version.version, version.batcher.depth


def _rows(feeds: dict[str, np.ndarray]) -> int:
    """The inferences in one request: its batch axis' length (1 for a request without one)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim > 0 else 1


def _agreed(shadow: np.ndarray, answer: np.ndarray, signature: Signature) -> int | None:
    """Rows where the shadow and the answer agree: the same class, or for a regressor the same drift bin of the
    challenger's predicted value; None when there is nothing to compare (a regressor without bins)."""
    if signature.is_regressor:
        mine, theirs = as_values(shadow), as_values(answer)
        if signature.bin_edges is None or mine is None or theirs is None:
            return None
        return int(np.count_nonzero(bin_of(mine, signature.bin_edges) == bin_of(theirs, signature.bin_edges)))
    if answer.ndim != 2:
        return None
    return int(np.count_nonzero(shadow.argmax(axis=1) == answer.argmax(axis=1)))
