"""The gateway's HTTP face: the Open Inference Protocol v2 REST API, health, metrics and the admin API; its
lifespan also starts and stops the gRPC face (``grpc_api.py``) when ``FERRY_GATEWAY_GRPC_PORT`` is set.

``create_app`` returns an ASGI app that sends ``POST .../infer`` to the plain-ASGI inference route and
everything else to FastAPI (metadata, health, ``/metrics``, ``/admin/faults``, the OpenAPI document).

No ``from __future__ import annotations``: FastAPI must resolve annotations naming local objects.
"""

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.domain import Fault
from services.gateway.entrypoints.feedback import add_feedback_route
from services.gateway.entrypoints.grpc_api import start_grpc
from services.gateway.entrypoints.infer_route import InferRoute, infer_target
from services.gateway.entrypoints.triton import EXTENSIONS, add_triton_routes
from services.gateway.fleet import LoadedVersion, ModelState
from services.gateway.service import Gateway
from shared.events import TensorSpec

SERVER_NAME = "ferry-gateway"
SERVER_VERSION = "0.1.0"


class FaultIn(BaseModel):
    """A fault to inject into one version at run time."""

    model_config = ConfigDict(extra="forbid")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of requests that fail")
    delay_ms: float = Field(default=0.0, ge=0, le=600_000, description="added before each run")


class InferRequestDoc(BaseModel):
    """An OIP v2 inference request (documentation; the route itself is plain ASGI)."""

    id: str | None = None
    inputs: list[dict[str, Any]] = Field(description="name, shape, datatype, and data or parameters.binary_data_size")
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


class GatewayApp:
    """The composed ASGI app: the inference route first, FastAPI for the rest."""

    def __init__(self, gateway: Gateway, api: FastAPI) -> None:
        self.gateway = gateway
        self.api = api
        self.infer = InferRoute(gateway.inference, gateway.settings, gateway.access_log, gateway.settings.tracing)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = infer_target(scope["path"])
            if target is not None:
                await self.infer(scope, receive, send, *target)
                return
        await self.api(scope, receive, send)


def create_app(gateway: Gateway) -> GatewayApp:
    """The gateway's ASGI application; its lifespan starts ``gateway`` on the event loop, then its runtime's
    workers, and stops them in the reverse order."""
    runtime = gateway.runtime

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        runtime.start()
        grpc_server = None
        try:
            grpc_server = await start_grpc(gateway)  # on this loop, beside HTTP; a port not bound fails start-up
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(gateway.settings.shutdown_timeout_s)  # lets the calls in flight finish
            await asyncio.to_thread(runtime.stop_workers)
            await gateway.stop()
            await asyncio.to_thread(runtime.close)

    api = FastAPI(
        title="Ferry gateway",
        version=SERVER_VERSION,
        lifespan=lifespan,
        description="Open Inference Protocol v2 (REST, with the binary tensor extension). "
        'Errors are JSON: `{"error": "..."}`.',
    )
    _install_error_handlers(api)
    add_triton_routes(api, gateway, _admin_guard(gateway))
    _add_protocol_routes(api, gateway)
    add_feedback_route(api, gateway)
    runtime.add_routes(api)
    _add_status_route(api, gateway)
    _add_admin_routes(api, gateway)
    return GatewayApp(gateway, api)


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return JSONResponse(
            status_code=error.status_code, content={"error": str(error.detail)}, headers=getattr(error, "headers", None)
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        summary = "; ".join(
            f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg')}" for p in error.errors()
        )
        return JSONResponse(status_code=422, content={"error": f"invalid request: {summary}"[:2000]})


def _state(gateway: Gateway, name: str) -> ModelState:
    state = gateway.fleet.get(name)
    if state is None or not state.loaded():
        raise HTTPException(404, str(gateway.fleet.missing(name)))
    return state


def _version(gateway: Gateway, name: str, version: str | None) -> LoadedVersion:
    _state(gateway, name)
    found = gateway.fleet.serving(name, version)
    if found is None:
        raise HTTPException(404, f"model {name!r} has no loaded version {version}")
    return found


def _metadata(gateway: Gateway, name: str, version: LoadedVersion) -> dict[str, Any]:
    signature = version.spec.signature
    state = _state(gateway, name)
    return {
        "name": name,
        "versions": [str(loaded.version) for loaded in state.loaded()],
        "platform": "onnxruntime_onnx",
        "inputs": [spec.model_dump() for spec in signature.inputs],
        "outputs": [
            _output_metadata(spec, signature.labels if index == 0 else None)
            for index, spec in enumerate(signature.outputs)
        ],
    }


def _output_metadata(spec: TensorSpec, labels: list[str] | None) -> dict[str, Any]:
    """An output's tensor metadata; the class scores' carries the class names in ``parameters.labels`` (as
    MLServer's tensor metadata carries parameters), the names a classification request answers with."""
    metadata = spec.model_dump()
    if labels is not None:
        metadata["parameters"] = {"labels": labels}
    return metadata


def _add_protocol_routes(api: FastAPI, gateway: Gateway) -> None:
    tags: list[str | Enum] = ["open inference protocol v2"]

    @api.get("/v2", tags=tags, summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    @api.get("/v2/health/live", tags=tags, summary="Liveness: the process and its worker run")
    async def live() -> Response:
        is_live = gateway.runtime.live()
        return JSONResponse(status_code=200 if is_live else 503, content={"live": is_live})

    @api.get("/v2/health/ready", tags=tags, summary="Readiness: deployments loaded and followed")
    async def ready() -> Response:
        is_ready = gateway.ready
        return JSONResponse(status_code=200 if is_ready else 503, content={"ready": is_ready})

    @api.get("/v2/models/{name}", tags=tags, summary="Model metadata (the champion's signature)")
    async def model_metadata(name: str) -> dict[str, Any]:
        return _metadata(gateway, name, _version(gateway, name, None))

    @api.get("/v2/models/{name}/versions/{version}", tags=tags, summary="Metadata of one loaded version")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        return _metadata(gateway, name, _version(gateway, name, version))

    @api.get("/v2/models/{name}/ready", tags=tags, summary="Model readiness")
    async def model_ready(name: str) -> dict[str, Any]:
        _version(gateway, name, None)
        return {"name": name, "ready": True}

    @api.get("/v2/models/{name}/versions/{version}/ready", tags=tags, summary="Version readiness")
    async def version_ready(name: str, version: str) -> dict[str, Any]:
        _version(gateway, name, version)
        return {"name": name, "version": version, "ready": True}

    # Served by the plain-ASGI route in front of FastAPI; declared here, with their path parameters, so
    # that the OpenAPI document describes them truthfully.
    for path, endpoint, summary in (
        ("/v2/models/{name}/infer", _documented_infer, "Inference (champion, or canary by route key)"),
        ("/v2/models/{name}/versions/{version}/infer", _documented_pinned_infer, "Inference on one loaded version"),
    ):
        api.add_api_route(path, endpoint, methods=["POST"], tags=tags, summary=summary, response_model=dict[str, Any])


async def _documented_infer(name: str, body: InferRequestDoc) -> dict[str, Any]:
    raise HTTPException(500, "the inference route is served before FastAPI")  # pragma: no cover


async def _documented_pinned_infer(name: str, version: str, body: InferRequestDoc) -> dict[str, Any]:
    raise HTTPException(500, "the inference route is served before FastAPI")  # pragma: no cover


def _add_status_route(api: FastAPI, gateway: Gateway) -> None:
    @api.get("/status", tags=["operations"], summary="What each model serves in this process")
    async def status() -> dict[str, Any]:
        return {
            "ready": gateway.ready,
            "models": {name: _describe(gateway, state) for name, state in gateway.fleet.models.items()},
            "pinned": [
                {"model": name, "version": number, "state": _residency(gateway, version)}
                for (name, number), version in list(gateway.fleet.pinned.items())
            ],
            "memory": gateway.residency.report() if gateway.residency is not None else None,
        }


def _residency(gateway: Gateway, version: LoadedVersion) -> str:
    return "loaded" if gateway.residency is None else gateway.residency.state_of(version)


def _describe(gateway: Gateway, state: ModelState) -> dict[str, Any]:
    def role(version: LoadedVersion | None) -> dict[str, Any] | None:
        if version is None:
            return None
        return {
            "version": version.version,
            "sha256": version.spec.sha256,
            "provider": version.model.provider or None,
            "state": _residency(gateway, version),
            "evicted": version.evicted,
        }

    deployment = state.deployment
    return {
        "revision": deployment.revision,
        "champion": role(state.champion),
        "challenger": role(state.challenger),
        "previous": role(state.previous),
        "canary_weight": deployment.canary_weight,
        "shadow": deployment.shadow,
    }


def _admin_guard(gateway: Gateway) -> Any:
    bearer = HTTPBearer(auto_error=False, description="FERRY_GATEWAY_ADMIN_TOKEN")

    def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        expected = gateway.settings.token
        if expected is None:
            raise HTTPException(403, "the admin API is off: set FERRY_GATEWAY_ADMIN_TOKEN to turn it on")
        if credentials is None:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
            raise HTTPException(403, "invalid token")

    return require_admin


def _add_admin_routes(api: FastAPI, gateway: Gateway) -> None:
    guard = [Depends(_admin_guard(gateway))]
    tags: list[str | Enum] = ["admin"]

    @api.get("/admin/faults", tags=tags, dependencies=guard, summary="Faults injected in this process")
    async def list_faults() -> list[dict[str, Any]]:
        return [
            {"model": model, "version": version, "error_rate": fault.error_rate, "delay_ms": fault.delay_ms}
            for (model, version), fault in gateway.fleet.faults.items()
        ]

    @api.put(
        "/admin/faults/{model}/{version}",
        tags=tags,
        dependencies=guard,
        summary="Make a version fail (error_rate) or slow (delay_ms) at run time",
    )
    async def put_fault(model: str, version: int, fault: FaultIn) -> dict[str, Any]:
        gateway.fleet.faults[(model, version)] = Fault(error_rate=fault.error_rate, delay_ms=fault.delay_ms)
        return {"model": model, "version": version, **fault.model_dump()}

    @api.delete("/admin/faults/{model}/{version}", tags=tags, dependencies=guard, summary="Remove a fault")
    async def delete_fault(model: str, version: int) -> dict[str, Any]:
        removed = gateway.fleet.faults.pop((model, version), None)
        return {"model": model, "version": version, "removed": removed is not None}
