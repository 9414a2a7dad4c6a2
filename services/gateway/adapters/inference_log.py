"""Inference logging: a sample of answered requests, published to ``inference.logged``.

The request path does a draw and, for a sampled request, one append to a bounded in-memory queue of the
answer's facts and capped copies of its tensors (at most MAX_LOGGED_VALUES values each): nothing is
serialised there, and a queued record never holds a whole request body. A
background thread drains the queue every ``interval_s``, flattens and caps the tensors into
:class:`InferenceLogged` events and hands them to the sink, whose Kafka producer batches them (linger,
batch size) and never blocks for long (``max_block_ms``). A full queue or a full producer buffer drops
the record; every record ends counted once: ``sent``, ``dropped`` or ``failed`` (the broker refused it).
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from opentelemetry import metrics

from shared.envelope import encode
from shared.events import MAX_LOGGED_VALUES, REQUEST_ID_PATTERN, InferenceLogged, LoggedTensor
from shared.settings import FerrySettings

log = logging.getLogger(__name__)

MAX_LOGGED_CHARS = 1024  # per BYTES element: a logged string is a sample of the input, not a copy of it
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}


@dataclass(frozen=True)
class Captured:
    """A tensor's shape and its first MAX_LOGGED_VALUES values, copied: a queued record never holds a
    request's whole body alive (the queue's memory is bounded by its length)."""

    shape: tuple[int, ...]
    values: np.ndarray
    cut: bool


def capture(data: np.ndarray) -> Captured:
    """The capped copy of a tensor, flattened row-major."""
    array = np.asarray(data)
    flat = array.reshape(-1)
    return Captured(
        tuple(int(n) for n in array.shape), flat[:MAX_LOGGED_VALUES].copy(), flat.shape[0] > MAX_LOGGED_VALUES
    )


@dataclass(frozen=True)
class Pending:
    """What the request path hands over: the answer's facts and its tensors' capped copies."""

    model: str
    request_id: str
    version: int
    route: str
    revision: int | None
    inputs: tuple[tuple[str, str, Captured], ...]
    outputs: tuple[tuple[str, str, Captured], ...]
    at: float
    more_tensors: bool = False
    """Tensors past the 64 a record holds were left out."""


class TensorLike(Protocol):
    """A decoded input tensor (the request path's ``Tensor``)."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def data(self) -> np.ndarray: ...


class LogSink(Protocol):
    def send(self, event: InferenceLogged, outcome: Callable[[str], None]) -> None:
        """Start sending ``event``; call ``outcome("sent" | "failed" | "dropped")`` once it is known."""
        ...

    def close(self) -> None: ...


class KafkaLogSink:
    """Sends through a producer of its own, batched (linger, batch size). kafka-python's buffer has no bound of
    its own, so the sink keeps one: past ``max_in_flight`` records not yet acknowledged (a slow broker), a
    record is dropped; ``max_block_ms`` bounds how long a send may wait for metadata (the logging thread's
    wait, never a request's)."""

    def __init__(
        self, settings: FerrySettings, *, make_producer: Callable[[], Any], source: str, max_in_flight: int = 10_000
    ) -> None:
        self._make_producer = make_producer
        self._producer: Any = None
        self._source = source
        self._topic = settings.topic(InferenceLogged.topic)
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._lock = threading.Lock()

    def send(self, event: InferenceLogged, outcome: Callable[[str], None]) -> None:
        if self._in_flight >= self._max_in_flight:
            outcome("dropped")
            return
        message = encode(event, source=self._source)
        if self._producer is None:
            try:  # built on first use, on the logging thread: a broker away at start never delays the gateway
                self._producer = self._make_producer()
            except Exception as error:  # noqa: BLE001 - no broker yet, or a bad setting: said, and tried again later
                log.warning("inference log producer not built (records dropped): %s", repr(error)[:300])
                outcome("dropped")
                return
        try:
            future = self._producer.send(self._topic, key=message.key, value=message.value, headers=message.headers)
        except Exception as error:  # noqa: BLE001 - metadata not there in time, no broker, a closed producer
            log.debug("inference log of %s dropped: %s", event.model_name, repr(error)[:300])
            outcome("dropped")
            return
        self._settle(1)
        future.add_callback(lambda _: self._done(outcome, "sent"))
        future.add_errback(lambda _: self._done(outcome, "failed"))

    def _settle(self, change: int) -> None:
        with self._lock:
            self._in_flight += change

    def _done(self, outcome: Callable[[str], None], result: str) -> None:
        self._settle(-1)
        outcome(result)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


class InferenceLog:
    """The sampler, the bounded queue and the thread that drains it (``run``)."""

    def __init__(
        self,
        sink: LogSink,
        *,
        sample: float,
        sample_by_model: Mapping[str, float] | None = None,
        max_queue: int = 10_000,
        gateway: str = "",
        interval_s: float = 0.05,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.sink = sink
        self.sample = sample
        self.sample_by_model = dict(sample_by_model or {})
        self.max_queue = max_queue
        self.gateway = gateway[:256]
        self.interval_s = interval_s
        self._draw = draw
        self._queue: deque[Pending] = deque()
        self._lock = threading.Lock()
        self.counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._counter = metrics.get_meter("ferry.gateway").create_counter(
            "ferry.gateway.inference_logs", unit="1", description="inference log records by model and outcome"
        )

    @property
    def enabled(self) -> bool:
        return self.sample > 0 or any(rate > 0 for rate in self.sample_by_model.values())

    def rate(self, model: str) -> float:
        """The share of ``model``'s answered requests logged."""
        return self.sample_by_model.get(model, self.sample)

    def offer(
        self,
        model: str,
        request_id: str,
        version: int,
        route: str,
        revision: int | None,
        inputs: Sequence[TensorLike],
        outputs: tuple[Sequence[str], Sequence[np.ndarray]],
    ) -> bool:
        """On the request path: log this answer when it is drawn and the queue has room; never blocks.

        ``outputs`` is (names, arrays). Nothing is built for a request that is not drawn."""
        rate = self.sample_by_model.get(model, self.sample)
        if rate <= 0 or (rate < 1 and self._draw() >= rate):
            return False
        if len(self._queue) >= self.max_queue:
            self.count(model, "dropped")
            return False
        tensors = tuple((tensor.name, tensor.datatype, capture(tensor.data)) for tensor in inputs[:64])
        names, arrays = outputs
        pairs = zip(names[:64], arrays[:64], strict=False)  # the session's output names, one per array
        answered = tuple((name, datatype_of(data), capture(data)) for name, data in pairs)
        more = len(inputs) > 64 or len(arrays) > 64
        self._queue.append(
            Pending(model, request_id, version, route, revision, tensors, answered, time.time(), more_tensors=more)
        )
        return True

    def count(self, model: str, outcome: str) -> None:
        """Count one record's fate (from the request path, this thread or the producer's)."""
        with self._lock:
            self.counts[(model, outcome)] += 1
        self._counter.add(1, {"model": model, "outcome": outcome})

    def drain(self) -> int:
        """Hand every queued record to the sink; the number handed."""
        handed = 0
        while self._queue:
            pending = self._queue.popleft()
            try:
                event = to_event(pending, self.gateway)
            except ValueError:  # a record the contract refuses (should not happen): counted, never raised
                log.warning("inference log of %s could not be built", pending.model, exc_info=True)
                self.count(pending.model, "failed")
                continue
            model = pending.model
            self.sink.send(event, lambda outcome, model=model: self.count(model, outcome))  # type: ignore[misc]
            handed += 1
        return handed

    def run(self, stop: threading.Event) -> None:
        """The worker: drain every ``interval_s`` until ``stop``, then once more."""
        while not stop.wait(self.interval_s):
            self.drain()
        self.drain()

    @property
    def queued(self) -> int:
        return len(self._queue)


def to_event(pending: Pending, gateway: str) -> InferenceLogged:
    """The record of one answered request: tensors flattened row-major and capped at MAX_LOGGED_VALUES."""
    inputs = [_logged(name, datatype, captured) for name, datatype, captured in pending.inputs]
    outputs = [_logged(name, datatype, captured) for name, datatype, captured in pending.outputs]
    truncated = pending.more_tensors or any(captured.cut for _, _, captured in pending.inputs + pending.outputs)
    request_id = pending.request_id if _REQUEST_ID.match(pending.request_id) else uuid.uuid4().hex
    return InferenceLogged(
        model_name=pending.model,
        request_id=request_id,
        version=pending.version,
        route=pending.route,  # type: ignore[arg-type]
        revision=pending.revision if pending.revision is not None and pending.revision >= 1 else None,
        inputs=inputs,
        outputs=outputs,
        truncated=truncated,
        gateway=gateway,
        at=datetime.fromtimestamp(pending.at, UTC),
    )


def logged_tensor(name: str, datatype: str, data: np.ndarray) -> tuple[LoggedTensor, bool]:
    """One tensor flattened and capped; and whether it was cut."""
    captured = capture(data)
    return _logged(name, datatype, captured), captured.cut


def _logged(name: str, datatype: str, captured: Captured) -> LoggedTensor:
    # Built without re-validation: the values are plain JSON-safe numbers and strings, at most MAX_LOGGED_VALUES.
    return LoggedTensor.model_construct(
        name=name[:256], datatype=datatype, shape=list(captured.shape), data=_plain(captured.values)
    )


def _plain(values: np.ndarray) -> list[Any]:
    """JSON-safe Python values: bytes as text (capped), non-finite floats as their names."""
    if values.dtype.kind in "OSU":
        return [_text(value) for value in values.tolist()]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return [value if math.isfinite(value) else str(value) for value in values.tolist()]
    return values.tolist()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:MAX_LOGGED_CHARS]


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of an output array."""
    return _DATATYPES.get(str(np.asarray(array).dtype), "BYTES")
