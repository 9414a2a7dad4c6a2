"""``POST /v2/models/{name}[/versions/{v}]/infer`` as plain ASGI: the hot path skips the framework.

FastAPI's request parsing and validation cost more than the model's run for small models (see
bench/gateway_bench.py), so the inference route reads the body, decodes it, calls the request path and
writes the answer itself. Every other route, and the OpenAPI document, stay in FastAPI.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.gateway.adapters.access_log import AccessLog
from services.gateway.domain import (
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    RateLimited,
    RunFailed,
    VersionNotFound,
    retry_after_header,
)
from services.gateway.entrypoints.oip import HEADER_LENGTH, decode_infer, encode_infer, select_outputs
from services.gateway.service import Inference, Trail
from services.gateway.settings import GatewaySettings

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
log = logging.getLogger(__name__)
PREFIX, SUFFIX = "/v2/models/", "/infer"
_HEADER_LENGTH = HEADER_LENGTH.encode()


class BodyTooLarge(Exception):
    pass


class UnsupportedEncoding(Exception):
    pass


class ClientGone(Exception):
    pass


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version or None) when ``path`` is an inference URL, else None."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    parts = path[len(PREFIX) : -len(SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


@dataclass
class InferRoute:
    """The ASGI handler of the inference route."""

    inference: Inference
    settings: GatewaySettings
    access_log: AccessLog | None = None
    trace_requests: bool = True

    def __post_init__(self) -> None:
        self._tracer = trace.get_tracer("ferry.gateway")
        self._api_key_header = self.settings.api_key_header.lower().encode()
        self._limit = self.settings.max_body_bytes
        # Request ids this process makes up: a random prefix, then a counter (uuid4 costs ten times more).
        self._id_prefix, self._ids = uuid.uuid4().hex[:16], itertools.count(1)
        self._wanted = (
            b"content-length",
            b"content-encoding",
            _HEADER_LENGTH,
            b"x-request-id",
            b"x-ferry-route-key",
            b"x-ferry-deadline-ms",
            b"traceparent",
            self._api_key_header,
        )

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send, model: str, version: str | None
    ) -> None:
        started = time.perf_counter()
        headers = _headers(scope, self._wanted)
        trail = Trail(request_id=headers.get(b"x-request-id") or f"{self._id_prefix}-{next(self._ids):x}", model=model)
        span = self._start_span(headers)
        status, body, extra = 500, b"", dict[str, str]()
        try:
            status, body, extra = await self._answer(scope, receive, headers, trail, version)
        except ClientGone:
            status = 499
        except Exception:  # noqa: BLE001 - a bug must answer 500 and be logged, never kill the connection
            log.exception("unexpected failure in request %s", trail.request_id)
            status, body, extra = 500, _error("internal error"), {}
        finally:
            if span is not None:
                end_span(span, trail, status)
        if status != 499:
            await _respond(send, status, body, trail, extra)
        if self.access_log is not None:
            self.access_log.record(
                trail.request_id,
                model,
                trail.version,
                trail.route,
                status,
                trail.outcome,
                (time.perf_counter() - started) * 1000,
            )

    def _start_span(self, headers: dict[bytes, str]) -> trace.Span | None:
        """The request's span, when spans go anywhere (an OTLP endpoint is set): creating one costs more
        than the rest of the request path, and the access log carries the same facts."""
        if not self.trace_requests:
            return None
        context = propagate.extract({"traceparent": headers[b"traceparent"]}) if b"traceparent" in headers else None
        return self._tracer.start_span("infer", context=context, kind=SpanKind.SERVER)

    async def _answer(
        self, scope: dict[str, Any], receive: Receive, headers: dict[bytes, str], trail: Trail, version: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            if self.inference.fleet.get(trail.model) is None:
                # before the body: an unknown (or unloaded) model is a 404 whatever is sent
                raise self.inference.fleet.missing(trail.model)
            pinned = version_number(model=trail.model, version=version)
            raw = await _read_body(receive, headers, self._limit)
            header_length = _int_header(headers, _HEADER_LENGTH)
            request = decode_infer(raw, header_length)
            if request.request_id is not None:
                trail.request_id = request.request_id
            deadline = request_deadline_s(headers.get(b"x-ferry-deadline-ms"), request.timeout_s)
            client = headers.get(self._api_key_header) or _client_address(scope)
            route_key = headers.get(b"x-ferry-route-key") or trail.request_id
            result = await self.inference.infer(
                trail, request.tensors, pinned=pinned, route_key=route_key, client=client, deadline_s=deadline
            )
            try:
                outputs = select_outputs(
                    result.output_names,
                    result.outputs,
                    request.outputs,
                    request.binary_output,
                    result.labels,
                    regressor=result.regressor,
                )
            except InvalidInput:
                trail.outcome = "client_error"
                raise
            payload, json_length = encode_infer(trail.model, result.version, trail.request_id, outputs)
            extra = {"inference-header-content-length": str(json_length)} if json_length is not None else {}
            return 200, payload, extra
        except BodyTooLarge:
            return 413, _error(f"the request body is larger than {self._limit} bytes"), {}
        except UnsupportedEncoding as error:
            return 415, _error(str(error)), {}
        except GatewayError as error:
            return http_status(error), _error(str(error)), _retry_after(error)


def http_status(error: GatewayError) -> int:
    """The HTTP status of a refusal (gRPC's status code is mapped from it: ``grpc_api.py``)."""
    for kind, status in (
        (InvalidInput, 400),
        (ModelNotFound, 404),
        (VersionNotFound, 404),
        (RateLimited, 429),
        (Overloaded, 503),
        (DeadlineExceeded, 504),
        (RunFailed, 500),
    ):
        if isinstance(error, kind):
            return status
    return 500


def _retry_after(error: GatewayError) -> dict[str, str]:
    if isinstance(error, RateLimited | Overloaded):
        return {"retry-after": retry_after_header(error.retry_after_s)}
    return {}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _headers(scope: dict[str, Any], wanted: tuple[bytes, ...]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in wanted:
            found[name] = value.decode("latin-1")
    return found


def _int_header(headers: dict[bytes, str], name: bytes) -> int | None:
    text = headers.get(name)
    if text is None:
        return None
    if not text.strip().isdigit() or len(text) > 12:
        raise InvalidInput(f"header {name.decode()} must be a non-negative integer")
    return int(text)


def version_number(*, model: str, version: str | None) -> int | None:
    """A pinned version's number; a version that is not one is not found."""
    if version is None:
        return None
    if not version.isdigit() or len(version) > 10:
        raise VersionNotFound(model, version[:40])
    return int(version)


def request_deadline_s(header: str | None, timeout_s: float | None) -> float | None:
    if header is None:
        return timeout_s
    try:
        milliseconds = float(header)
    except ValueError as error:
        raise InvalidInput("x-ferry-deadline-ms must be a number of milliseconds") from error
    if not 0 < milliseconds < 1e9:
        raise InvalidInput("x-ferry-deadline-ms must be positive")
    return milliseconds / 1000 if timeout_s is None else min(timeout_s, milliseconds / 1000)


def _client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _read_body(receive: Receive, headers: dict[bytes, str], limit: int) -> bytes:
    declared = _int_header(headers, b"content-length")
    if declared is not None and declared > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get(b"content-encoding", "identity").strip().lower()
    return body if encoding in ("", "identity") else _decompress(body, encoding, limit)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip and deflate (zlib), as tritonclient compresses; bounded like any body."""
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding[:40]!r}; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidInput(f"the body is not valid {encoding} data") from error
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge()
    return data


async def _respond(send: Send, status: int, body: bytes, trail: Trail, extra: dict[str, str]) -> None:
    binary = "inference-header-content-length" in extra
    headers = [
        (b"content-type", b"application/octet-stream" if binary else b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if trail.request_id.isascii() and trail.request_id.isprintable():  # never echo a header injection
        headers.append((b"x-request-id", trail.request_id.encode()))
    if trail.version is not None:
        headers.append((b"x-ferry-model-version", str(trail.version).encode()))
        headers.append((b"x-ferry-route", str(trail.route).encode()))
    headers.extend((name.encode(), value.encode()) for name, value in extra.items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def end_span(span: trace.Span, trail: Trail, status: int) -> None:
    """End a request's span with what its trail says (``status``: the HTTP status, or its equivalent)."""
    if span.is_recording():
        span.set_attributes(
            {
                "ferry.request_id": trail.request_id,
                "ferry.model": trail.model,
                "ferry.version": trail.version if trail.version is not None else -1,
                "ferry.route": trail.route or "none",
                "http.response.status_code": status,
            }
        )
        if trail.failed_over_from is not None:
            span.set_attribute("ferry.failed_over_from", trail.failed_over_from)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()
