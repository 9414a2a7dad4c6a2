"""Artifact routes: a version's artifact by number or by alias (champion, challenger), GET and HEAD.

No ``from __future__ import annotations`` here: FastAPI must resolve the endpoints' annotations.
"""

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path
from fastapi.responses import Response, StreamingResponse
from opentelemetry import metrics
from sqlalchemy.orm import Session

from services.registry.adapters import views
from services.registry.adapters.orm import ModelVersion
from services.registry.domain import DeploymentState, alias_target
from services.registry.service import artifact_of, state_of
from shared.artifacts import ArtifactError, ArtifactNotFound
from shared.events import INT32_MAX, MODEL_NAME_PATTERN, ArtifactRef
from shared.registry_models import ErrorOut

if TYPE_CHECKING:
    from services.registry.entrypoints.api import ApiDeps

log = logging.getLogger(__name__)

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="the model's name")]
VersionPath = Annotated[int, Path(ge=1, le=INT32_MAX, description="the version number, from 1")]
AliasPath = Annotated[str, Path(max_length=64, description="champion or challenger")]
IfNoneMatch = Annotated[str | None, Header()]
MEDIA_TYPE = "application/octet-stream"

ARTIFACT_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"content": {MEDIA_TYPE: {}}},
    304: {"description": "ETag matched"},
    500: {"model": ErrorOut, "description": "the store's copy failed its integrity check; nothing is served"},
    503: {"model": ErrorOut, "description": "the artifact store is unreachable"},
}
HEAD_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"description": "no body; Content-Length, Content-Type, ETag and X-Ferry-Sha256 as GET would send them"},
    404: {"description": "unknown model, version or alias, or the store holds no copy"},
    503: {"description": "the artifact store is unreachable"},
}


def add_artifact_routes(router: APIRouter, deps: "ApiDeps") -> None:
    """GET and HEAD of ``…/versions/{v}/artifact`` and ``…/aliases/{alias}/artifact``."""
    count_integrity_failure = _integrity_failures()
    by_version = "/models/{name}/versions/{version}/artifact"
    by_alias = "/models/{name}/aliases/{alias}/artifact"

    @router.get(
        by_version,
        summary="The version's artifact (the store's copy, verified whole before the first byte); ETag is its sha256",
        response_class=StreamingResponse,
        responses=ARTIFACT_ERRORS,
    )
    def get_artifact(name: ModelName, version: VersionPath, if_none_match: IfNoneMatch = None) -> Response:
        with deps.read_sessions() as session:
            found = views.get_version(session, name, version)
        return _download(deps, name, found, if_none_match, count_integrity_failure)

    @router.head(by_version, summary="The artifact's size, sha256 and media type; no body", responses=HEAD_ERRORS)
    def head_artifact(name: ModelName, version: VersionPath) -> Response:
        with deps.read_sessions() as session:
            found = views.get_version(session, name, version)
        return _head(deps, name, found)

    @router.get(
        by_alias,
        summary="The artifact of the version an alias names now, verified like the version's; X-Ferry-Version names it",
        response_class=StreamingResponse,
        responses=ARTIFACT_ERRORS,
    )
    def get_alias_artifact(name: ModelName, alias: AliasPath, if_none_match: IfNoneMatch = None) -> Response:
        with deps.read_sessions() as session:
            found = version_by_alias(session, name, alias)
        return _download(deps, name, found, if_none_match, count_integrity_failure)

    @router.head(by_alias, summary="The alias's artifact's size, sha256 and media type; no body", responses=HEAD_ERRORS)
    def head_alias_artifact(name: ModelName, alias: AliasPath) -> Response:
        with deps.read_sessions() as session:
            found = version_by_alias(session, name, alias)
        return _head(deps, name, found)


def version_by_alias(session: Session, name: str, alias: str) -> ModelVersion:
    """The version ``alias`` (champion, challenger) names now; ModelNotFound, AliasNotFound."""
    model = views.model_by_name(session, name)
    deployment = views.get_deployment(session, model)
    state = state_of(deployment) if deployment is not None else DeploymentState()
    return views.get_version(session, name, alias_target(name, alias, state))


def _headers(found: ModelVersion, artifact: ArtifactRef) -> dict[str, str]:
    return {"ETag": f'"{artifact.sha256}"', "X-Ferry-Sha256": artifact.sha256, "X-Ferry-Version": str(found.number)}


def _download(
    deps: "ApiDeps", name: str, found: ModelVersion, if_none_match: str | None, count_failure: Callable[[str], None]
) -> Response:
    artifact = artifact_of(found)
    headers = _headers(found, artifact)
    if if_none_match is not None and headers["ETag"] in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    chunks = _verified_chunks(deps, name, found.number, artifact, count_failure)
    headers["Content-Disposition"] = f'attachment; filename="{name}-v{found.number}.{artifact.format}"'
    headers["Content-Length"] = str(artifact.size_bytes)
    return StreamingResponse(chunks, media_type=MEDIA_TYPE, headers=headers)


def _head(deps: "ApiDeps", name: str, found: ModelVersion) -> Response:
    """The headers GET would send, no body. The store's copy must exist; its digest is checked by GET only."""
    artifact = artifact_of(found)
    try:
        present = deps.artifacts.has(artifact.sha256)
    except OSError as error:
        raise HTTPException(503, "the artifact store is unavailable; retry later") from error
    if not present:
        raise HTTPException(404, f"the artifact of {name} v{found.number} is missing from the store")
    headers = {**_headers(found, artifact), "Content-Length": str(artifact.size_bytes)}
    return Response(status_code=200, headers=headers, media_type=MEDIA_TYPE)


def _integrity_failures() -> Callable[[str], None]:
    counter = metrics.get_meter("ferry.registry").create_counter(
        "ferry.registry.artifact.integrity_failures",
        unit="1",
        description="artifact downloads refused because the store's copy does not match its digest or size",
    )
    return lambda model: counter.add(1, {"model": model})


def _verified_chunks(
    deps: "ApiDeps", name: str, version: int, artifact: ArtifactRef, count_failure: Callable[[str], None]
) -> Iterator[bytes]:
    """The store's copy of the version's digest, verified whole before the response starts.

    The URI recorded with the version is never opened. A copy that is missing is a 404; one whose size or
    digest is wrong (tampered, truncated, a link out of the store) is a 500, an ERROR log and a count of
    ``ferry_registry_artifact_integrity_failures_total``, never a truncated stream; a store that cannot be
    reached is a 503.
    """
    try:
        return deps.artifacts.stream_verified(artifact.sha256, size_bytes=artifact.size_bytes)
    except ArtifactNotFound as error:
        raise HTTPException(404, f"the artifact of {name} v{version} is missing from the store") from error
    except ArtifactError as error:
        log.error("artifact integrity failure, not served: %s v%s (%s): %s", name, version, artifact.sha256, error)
        count_failure(name)
        raise HTTPException(500, f"the artifact of {name} v{version} failed its integrity check") from error
    except OSError as error:
        log.warning("artifact store unavailable for %s v%s: %s", name, version, error)
        raise HTTPException(503, "the artifact store is unavailable; retry later") from error
