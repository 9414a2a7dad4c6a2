"""POST /models/{name}/versions: an ONNX artifact trained elsewhere, checked, stored and announced.

No ``from __future__ import annotations`` here: FastAPI must resolve the endpoints' annotations.
"""

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from services.registry.entrypoints.artifact_routes import ModelName
from services.registry.settings import RegistrySettings
from services.registry.uploads import UploadRejected, register_upload
from shared.datasets import DatasetError, load_dataset
from shared.registry_models import ErrorOut, UploadOut

if TYPE_CHECKING:
    from services.registry.entrypoints.api import ApiDeps

METRICS = TypeAdapter(dict[str, float])
MAX_METRICS = 100
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no bearer token"},
    403: {"model": ErrorOut, "description": "wrong token, or writes disabled (no token configured)"},
    413: {"model": ErrorOut, "description": "larger than FERRY_REGISTRY_UPLOAD_MAX_BYTES"},
    415: {"model": ErrorOut, "description": "the body is not application/octet-stream"},
    422: {"model": ErrorOut, "description": "not ONNX, wrong signature, unsupported opset, unknown dataset, …"},
}
MEDIA_TYPE = "application/octet-stream"
Dataset = Annotated[str, Query(min_length=1, max_length=300, description="the dataset it was trained for")]
Metrics = Annotated[str | None, Query(max_length=10_000, description='JSON object of numbers: {"accuracy": 0.97}')]


def add_upload_routes(
    router: APIRouter, settings: RegistrySettings, deps: "ApiDeps", writer: Callable[..., str]
) -> None:
    """``POST /models/{name}/versions``: the body is the ONNX file, the dataset and metrics are query parameters."""
    limit = settings.upload_max_bytes
    datasets_root = settings.ferry.resolved_datasets_root

    @router.post(
        "/models/{name}/versions",
        summary="Register an ONNX artifact trained elsewhere: checked, stored by digest, announced as model.trained",
        status_code=202,
        responses=UPLOAD_ERRORS,
        openapi_extra={"requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": {"format": "binary"}}}}},
    )
    async def upload_version(
        name: ModelName,
        request: Request,
        dataset: Dataset,
        user: Annotated[str, Depends(writer)],
        metrics: Metrics = None,
    ) -> UploadOut:
        if request.headers.get("content-type", MEDIA_TYPE).split(";")[0].strip() != MEDIA_TYPE:
            raise HTTPException(415, f"send the ONNX file as the body, Content-Type: {MEDIA_TYPE}")
        scores = _metrics(metrics)
        data = await _body(request, limit)
        try:
            found = await run_in_threadpool(load_dataset, dataset, root=datasets_root)
            return await run_in_threadpool(
                register_upload,
                name,
                data,
                found,
                metrics=scores,
                max_bytes=limit,
                artifacts=deps.artifacts,
                uow=deps.uow_factory(),
            )
        except DatasetError as error:
            raise HTTPException(422, str(error)) from error
        except UploadRejected as error:
            raise HTTPException(error.status, f"artifact refused: {error.reason}") from error


def _metrics(raw: str | None) -> dict[str, float]:
    if raw is None:
        return {}
    try:
        metrics = METRICS.validate_json(raw)
    except ValidationError as error:
        raise HTTPException(422, 'metrics must be a JSON object of numbers, e.g. {"accuracy": 0.97}') from error
    if len(metrics) > MAX_METRICS or any(not 0 < len(key) <= 200 for key in metrics):
        raise HTTPException(422, f"metrics: at most {MAX_METRICS}, each named by 1 to 200 characters")
    if not all(math.isfinite(value) for value in metrics.values()):
        raise HTTPException(422, "metrics must be finite numbers")
    return metrics


async def _body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the artifact is {declared} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the artifact is larger than {limit} bytes, the most accepted")
        chunks.append(chunk)
    return b"".join(chunks)
