"""The gateway's rules, free of I/O: what a deployment is, which version serves a request, who is let in
(token buckets, the bound on work in flight and its shedding order), how batches are cut, and the
errors of the request path. The HTTP edge maps these errors to status codes; nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared.events import Signature, TensorSpec

Route = Literal["champion", "canary", "pinned", "fallback", "shadow"]
WorkKind = Literal["shadow", "canary", "champion"]
Outcome = Literal["ok", "client_error", "error", "timeout"]


# --- errors of the request path ------------------------------------------------------------------


class GatewayError(Exception):
    """Base of the request path's errors; each carries its context and knows nothing of HTTP."""


class InvalidInput(GatewayError):
    """The request is malformed or does not fit the model's signature: the client's mistake."""


class ModelNotFound(GatewayError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not served here")
        self.name = name


class ModelUnloaded(ModelNotFound):
    """An operator unloaded the model on this gateway (the model repository extension's unload)."""

    def __init__(self, name: str) -> None:
        GatewayError.__init__(
            self, f"model {name!r} is unloaded on this gateway; POST /v2/repository/models/{name}/load serves it again"
        )
        self.name = name


class VersionNotFound(GatewayError):
    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"model {name!r} has no loaded version {version}")
        self.name = name
        self.version = version


class RateLimited(GatewayError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("rate limit exceeded for this client")
        self.retry_after_s = retry_after_s


class Overloaded(GatewayError):
    def __init__(self, kind: WorkKind, retry_after_s: float = 1.0) -> None:
        super().__init__(f"the gateway is at its bound on work in flight ({kind} work is shed)")
        self.kind = kind
        self.retry_after_s = retry_after_s


class VersionUnavailable(Overloaded):
    """A version could not be loaded for this request (its artifact or session was refused, or the store is
    away); a later request tries again. A 503 with ``Retry-After``, like a shed request: the edges map it so."""

    def __init__(self, name: str, version: int, reason: str, retry_after_s: float) -> None:
        GatewayError.__init__(self, f"model {name!r} version {version} could not be loaded: {reason}")
        self.kind: WorkKind = "champion"
        self.retry_after_s = retry_after_s
        self.name, self.version, self.reason = name, version, reason


class DeadlineExceeded(GatewayError):
    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"the request did not finish within its deadline of {deadline_s * 1000:.0f} ms")
        self.deadline_s = deadline_s


class RunFailed(GatewayError):
    """A version failed at run time (a fault, not the client's input)."""


# --- deployments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionSpec:
    """A version to serve: its number, the digest and size of its artifact, and its registered signature."""

    version: int
    sha256: str
    size_bytes: int
    signature: Signature


@dataclass(frozen=True)
class Deployment:
    """What one model should serve, at one revision of the registry's deployment."""

    model_name: str
    revision: int
    champion: VersionSpec | None = None
    challenger: VersionSpec | None = None
    canary_weight: float = 0.0
    shadow: bool = False

    def wanted(self) -> list[VersionSpec]:
        return [spec for spec in (self.champion, self.challenger) if spec is not None]


def is_newer(candidate: Deployment, current: Deployment | None) -> bool:
    """Events arrive at least once and may be replayed: only a higher revision changes anything."""
    return current is None or candidate.revision > current.revision


def latest_per_model(deployments: Iterable[Deployment]) -> dict[str, Deployment]:
    """Each model's deployment of the highest revision, whatever order they came in (a replay of the
    topic, the registry's answer, or both): a repeat or an older revision changes nothing."""
    latest: dict[str, Deployment] = {}
    for deployment in deployments:
        if is_newer(deployment, latest.get(deployment.model_name)):
            latest[deployment.model_name] = deployment
    return latest


def previous_after(old_champion: int | None, new_champion: int | None, old_previous: int | None) -> int | None:
    """The fallback version after a change: the champion just replaced by a newer one.

    A rollback (the champion goes back to an older version) keeps no fallback newer than itself: the
    version rolled away from is what failed.
    """
    if new_champion is None:
        return None
    if old_champion is not None and old_champion < new_champion:
        return old_champion
    if old_previous is not None and old_previous < new_champion:
        return old_previous
    return None


# --- routing -------------------------------------------------------------------------------------


def route_fraction(route_key: str) -> float:
    """A stable position in [0, 1) for a routing key: the same key lands on the same side, in every process."""
    digest = hashlib.blake2b(route_key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def choose_version(champion: int, challenger: int | None, canary_weight: float, route_key: str) -> tuple[int, Route]:
    """Champion or canary for one request: the challenger takes keys below ``canary_weight``."""
    if challenger is not None and canary_weight > 0 and route_fraction(route_key) < canary_weight:
        return challenger, "canary"
    return champion, "champion"


# --- admission: token buckets and the bound on work in flight ---------------------------------------


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; one request takes one token."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a token was taken; otherwise the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class RateLimiter:
    """One token bucket per client, the least recently seen forgotten beyond ``max_clients``."""

    rate: float
    burst: float
    max_clients: int = 100_000
    _buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, client: str, now: float) -> float:
        """0 when the client may go on; otherwise the seconds to wait (for ``Retry-After``)."""
        if not self.enabled:
            return 0.0
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, self.burst, now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        return bucket.take(now)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds: round up, and never say 0."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class Admission:
    """The bound on work in flight. Each kind of work may fill its own share of the bound, so that when
    the gateway fills up shadow work is refused first, then canary work, and champion work last."""

    max_inflight: int
    shadow_share: float = 0.5
    canary_share: float = 0.8
    inflight: int = 0

    def limit(self, kind: WorkKind) -> int:
        share = {"shadow": self.shadow_share, "canary": self.canary_share, "champion": 1.0}[kind]
        return max(1, int(self.max_inflight * share))

    def try_enter(self, kind: WorkKind) -> bool:
        if self.inflight >= self.limit(kind):
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1


# --- batching ------------------------------------------------------------------------------------


def batch_take(queued_rows: Sequence[int], max_batch_size: int) -> int:
    """How many queued requests (oldest first) go into the next run: as many as fit in ``max_batch_size``
    rows, and always at least one, so a request larger than the bound runs alone rather than never."""
    total = 0
    for taken, rows in enumerate(queued_rows):
        if taken and total + rows > max_batch_size:
            return taken
        total += rows
    return len(queued_rows)


def split_offsets(rows: Sequence[int]) -> list[tuple[int, int]]:
    """The [start, stop) rows of each request inside a batch that concatenates them in order."""
    offsets: list[tuple[int, int]] = []
    start = 0
    for count in rows:
        offsets.append((start, start + count))
        start += count
    return offsets


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching of one model: at most ``max_batch_size`` rows per run, and a request waits at most
    ``max_delay_ms`` for others to join (0: only those that arrived in the same event-loop turn)."""

    max_batch_size: int = 64
    max_delay_ms: float = 0.0


# --- fault injection (tests and the demo) --------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Make a version fail a share of its requests, or answer late."""

    error_rate: float = 0.0
    delay_ms: float = 0.0

    def fails(self, draw: float) -> bool:
        """``draw`` is uniform in [0, 1)."""
        return draw < self.error_rate


# --- inputs against the signature ---------------------------------------------------------------


def check_inputs(signature: Signature, given: Sequence[tuple[str, str, Sequence[int]]]) -> None:
    """Each (name, datatype, shape) must be an input of the signature, with its datatype and a shape that
    fits (``-1`` matches any length), every input given once; InvalidInput says what is wrong."""
    inputs = signature.inputs
    if len(given) == len(inputs) and all(map(_fits, inputs, given)):
        return  # the usual request: every input in the signature's order, each as it should be
    specs = {spec.name: spec for spec in inputs}
    seen: set[str] = set()
    for name, datatype, shape in given:
        spec = specs.get(name)
        if spec is None:
            raise InvalidInput(f"unknown input tensor {name!r}; the model takes {sorted(specs)}")
        if name in seen:
            raise InvalidInput(f"input tensor {name!r} is given twice")
        seen.add(name)
        if datatype != spec.datatype:
            raise InvalidInput(f"input {name!r} has datatype {datatype}; the model takes {spec.datatype}")
        fits = len(shape) == len(spec.shape) and all(w in (-1, g) for w, g in zip(spec.shape, shape, strict=True))
        if not fits:
            raise InvalidInput(f"input {name!r} has shape {list(shape)}; the model takes {spec.shape}")
    missing = sorted(set(specs) - seen)
    if missing:
        raise InvalidInput(f"missing input tensors {missing}")


def _fits(spec: TensorSpec, given: tuple[str, str, Sequence[int]]) -> bool:
    name, datatype, shape = given
    if name != spec.name or datatype != spec.datatype or len(shape) != len(spec.shape):
        return False
    for wanted, got in zip(spec.shape, shape, strict=True):  # noqa: SIM110 - a generator costs more, per request
        if wanted != got and wanted != -1:
            return False
    return True


def batchable(signature: Signature) -> bool:
    """Requests can share a run when every input and output has a dynamic first (batch) axis."""
    tensors = [*signature.inputs, *signature.outputs]
    return bool(tensors) and all(spec.shape and spec.shape[0] == -1 for spec in tensors)
