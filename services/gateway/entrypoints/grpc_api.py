"""The gateway's gRPC face: the Open Inference Protocol v2's ``GRPCInferenceService`` (KServe's and Triton's),
served by grpcio's asyncio server on the event loop of the HTTP server, beside it.

``ModelInfer`` takes the REST route's path: the same :meth:`Inference.infer` (rate limits, routing,
canary, pinned versions, admission, deadline, batching, fallback, shadow, metrics), the same access log
(``protocol=grpc``, with the HTTP status the answer would have had) and the same span. gRPC's metadata
carries what REST's headers carry: ``x-request-id``, ``x-ferry-route-key``, ``x-ferry-deadline-ms``,
``traceparent`` and the API key header. The gRPC deadline bounds the request's deadline, as does
Triton's ``timeout`` parameter. Refusals are status codes, as Triton's: see :func:`grpc_code`.

With several gateway processes (``FERRY_GATEWAY_WORKERS``) each binds the gRPC port with SO_REUSEPORT
and the kernel spreads connections over them (HTTP's port is shared by uvicorn's supervisor instead); one
process binds it exclusively, so that a second gateway on the same port fails to start instead of
silently taking half its connections.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from services.gateway.domain import (
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    Overloaded,
    RateLimited,
    retry_after_header,
)
from services.gateway.entrypoints.grpc_tensors import decode_request, encode_response
from services.gateway.entrypoints.infer_route import end_span, http_status, request_deadline_s, version_number
from services.gateway.entrypoints.oip import select_outputs
from services.gateway.fleet import LoadedVersion
from services.gateway.proto import grpc_predict_v2_pb2 as pb
from services.gateway.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from services.gateway.service import Gateway, Trail

log = logging.getLogger(__name__)
SERVER_NAME, SERVER_VERSION = "ferry-gateway", "0.1.0"
EXTENSIONS = ["classification"]
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.RESOURCE_EXHAUSTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(error: GatewayError) -> grpc.StatusCode:
    """A refusal's status code: INVALID_ARGUMENT (400), NOT_FOUND (404), RESOURCE_EXHAUSTED (429 and 503),
    DEADLINE_EXCEEDED (504), INTERNAL for the rest (a run that failed)."""
    return _CODES.get(http_status(error), grpc.StatusCode.INTERNAL)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``GRPCInferenceService`` over one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.inference = gateway.inference
        self._api_key = gateway.settings.api_key_header.lower()
        self._tracer = trace.get_tracer("ferry.gateway") if gateway.settings.tracing else None
        self._id_prefix, self._ids = uuid.uuid4().hex[:16], itertools.count(1)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.gateway.runtime.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.gateway.ready)  # what /v2/health/ready answers

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        found = self.gateway.fleet.serving(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=found is not None)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        found = self.gateway.fleet.serving(request.name, request.version or None)
        if found is None:
            what = f"version {request.version[:40]} of " if request.version else ""
            message = f"{what}model {request.name[:200]!r} is not served here"
            return _refuse(context, grpc.StatusCode.NOT_FOUND, message, response=pb.ModelMetadataResponse())
        return _metadata(request.name, found, self.gateway)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        request_id = request.id or metadata.get("x-request-id") or f"{self._id_prefix}-{next(self._ids):x}"
        trail = Trail(request_id=request_id[:256], model=request.model_name)
        span = self._start_span(metadata)
        status = 500
        try:
            response = await self._answer(request, metadata, trail, context)
            status = 200
        except GatewayError as error:
            status = http_status(error)
            response = _refuse(context, grpc_code(error), str(error), _retry_after(error))
        except asyncio.CancelledError:
            status = 499  # the client went away (or its deadline passed) before the answer
            raise
        except Exception:  # noqa: BLE001 - a bug must answer INTERNAL and be logged, never kill the server
            log.exception("unexpected failure in request %s", trail.request_id)
            response = _refuse(context, grpc.StatusCode.INTERNAL, "internal error")
        finally:
            if span is not None:
                end_span(span, trail, status)
            if self.gateway.access_log is not None:
                took_ms = (time.perf_counter() - started) * 1000
                log_line = (trail.request_id, trail.model, trail.version, trail.route, status, trail.outcome, took_ms)
                self.gateway.access_log.record(*log_line, protocol="grpc")
        return response

    async def _answer(
        self, request: pb.ModelInferRequest, metadata: dict[str, str], trail: Trail, context: Any
    ) -> pb.ModelInferResponse:
        if self.inference.fleet.get(trail.model) is None:
            raise self.inference.fleet.missing(trail.model)
        pinned = version_number(model=trail.model, version=request.model_version or None)
        decoded = decode_request(request)
        deadline_s = request_deadline_s(metadata.get("x-ferry-deadline-ms"), decoded.timeout_s)
        remaining = context.time_remaining()
        if remaining is not None:  # the client's gRPC deadline
            deadline_s = remaining if deadline_s is None else min(deadline_s, remaining)
            if deadline_s <= 0:
                raise DeadlineExceeded(0)
        result = await self.inference.infer(
            trail,
            decoded.tensors,
            pinned=pinned,
            route_key=metadata.get("x-ferry-route-key") or trail.request_id,
            client=metadata.get(self._api_key) or _peer_host(context.peer()),
            deadline_s=deadline_s,
        )
        try:
            outputs = select_outputs(
                result.output_names,
                result.outputs,
                decoded.outputs,
                False,
                result.labels,
                regressor=result.regressor,
            )
        except InvalidInput:
            trail.outcome = "client_error"
            raise
        return encode_response(trail.model, result.version, trail.request_id, outputs, raw=decoded.raw)

    def _start_span(self, metadata: dict[str, str]) -> trace.Span | None:
        if self._tracer is None:
            return None
        context = propagate.extract({"traceparent": metadata["traceparent"]}) if "traceparent" in metadata else None
        return self._tracer.start_span("infer", context=context, kind=SpanKind.SERVER)


def _metadata(name: str, version: LoadedVersion, gateway: Gateway) -> pb.ModelMetadataResponse:
    state = gateway.fleet.get(name)
    signature = version.spec.signature
    return pb.ModelMetadataResponse(
        name=name,
        versions=[str(loaded.version) for loaded in state.loaded()] if state is not None else [],
        platform="onnxruntime_onnx",
        inputs=[_tensor_metadata(spec.name, spec.datatype, spec.shape) for spec in signature.inputs],
        outputs=[_tensor_metadata(spec.name, spec.datatype, spec.shape) for spec in signature.outputs],
    )


def _tensor_metadata(name: str, datatype: str, shape: Any) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=list(shape))


def _refuse(
    context: Any,
    code: grpc.StatusCode,
    message: str,
    trailing: tuple[tuple[str, str], ...] = (),
    *,
    response: Any = None,
) -> Any:
    """Answer with a status (the message returned with it is not sent)."""
    context.set_code(code)
    context.set_details(message)
    if trailing:
        context.set_trailing_metadata(trailing)
    return pb.ModelInferResponse() if response is None else response


def _retry_after(error: GatewayError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, RateLimited | Overloaded):
        return (("retry-after", retry_after_header(error.retry_after_s)),)
    return ()


def _peer_host(peer: str) -> str:
    """The client's address without its port: ``ipv4:127.0.0.1:5000`` → ``127.0.0.1``."""
    address = peer.split(":", 1)[1] if ":" in peer else peer
    return address.rsplit(":", 1)[0].strip("[]") or "unknown"


async def start_grpc(gateway: Gateway) -> grpc.aio.Server | None:
    """Serve gRPC on ``FERRY_GATEWAY_GRPC_PORT`` (on the running loop), or nothing when it is 0."""
    settings = gateway.settings
    if not settings.grpc_port:
        return None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(gateway), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    server.add_insecure_port(f"{host}:{settings.grpc_port}")  # raises when the port cannot be bound
    await server.start()
    log.info("gateway serving gRPC on %s:%s", settings.host, settings.grpc_port)
    return server
