"""Edits of models and versions (PATCH), archiving, their audit, and versions by alias.

No ``from __future__ import annotations`` here: FastAPI must resolve the endpoints' annotations.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response

from services.registry.adapters import views
from services.registry.adapters.orm import ModelAudit
from services.registry.adapters.repository import retry_conflicts
from services.registry.domain import actor_for
from services.registry.entrypoints.artifact_routes import AliasPath, ModelName, VersionPath, version_by_alias
from services.registry.entrypoints.schemas import decode_cursor, encode_cursor, model_out
from services.registry.service import edit_model, edit_version
from shared.registry_models import (
    ArchiveRequest,
    AuditEntryOut,
    AuditPage,
    ErrorOut,
    ModelEdit,
    ModelOut,
    VersionEdit,
    VersionOut,
)

if TYPE_CHECKING:
    from services.registry.entrypoints.api import ApiDeps

EDIT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no bearer token"},
    403: {"model": ErrorOut, "description": "wrong token, or writes disabled (no token configured)"},
    409: {"model": ErrorOut, "description": "the version is the champion or the challenger: it is never archived"},
}
Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]


def add_edit_routes(router: APIRouter, deps: "ApiDeps", writer: Callable[..., str]) -> None:
    """PATCH of a model or a version, POST …/archive, the audit, and GET of a version by alias."""

    @router.patch("/models/{name}", summary="Edit the description; merge tags (null removes)", responses=EDIT_ERRORS)
    def patch_model(
        name: ModelName, edit: Annotated[ModelEdit, Body()], user: Annotated[str, Depends(writer)]
    ) -> ModelOut:
        retry_conflicts(lambda: edit_model(name, edit, uow=deps.uow_factory(), actor=actor_for(user)))
        with deps.read_sessions() as session:
            model = views.model_by_name(session, name)
            return model_out(model, views.get_deployment(session, model))

    @router.patch(
        "/models/{name}/versions/{version}",
        summary="Edit a version's description and tags, or archive it (status: archived)",
        response_model=VersionOut,
        responses=EDIT_ERRORS,
    )
    def patch_version(
        name: ModelName,
        version: VersionPath,
        edit: Annotated[VersionEdit, Body()],
        user: Annotated[str, Depends(writer)],
    ) -> Response:
        retry_conflicts(lambda: edit_version(name, version, edit, uow=deps.uow_factory(), actor=actor_for(user)))
        return _version_response(deps, name, version)

    @router.post(
        "/models/{name}/versions/{version}/archive",
        summary="Archive a version that is neither champion nor challenger (versions are never deleted)",
        response_model=VersionOut,
        responses=EDIT_ERRORS,
    )
    def archive_version(
        name: ModelName,
        version: VersionPath,
        user: Annotated[str, Depends(writer)],
        request: Annotated[ArchiveRequest | None, Body()] = None,
    ) -> Response:
        edit = VersionEdit(status="archived", reason=request.reason if request else None)
        retry_conflicts(lambda: edit_version(name, version, edit, uow=deps.uow_factory(), actor=actor_for(user)))
        return _version_response(deps, name, version)

    @router.get("/models/{name}/audit", summary="Edits and archives of the model and its versions, newest first")
    def get_audit(name: ModelName, limit: Limit = 50, cursor: Cursor = None) -> AuditPage:
        before = decode_cursor(cursor) if cursor is not None else None
        with deps.read_sessions() as session:
            model = views.model_by_name(session, name)
            rows = views.list_audit(session, model.id, before=before, limit=limit + 1)
        next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
        return AuditPage(items=[audit_entry_out(row) for row in rows[:limit]], next_cursor=next_cursor)

    @router.get(
        "/models/{name}/aliases/{alias}",
        summary="The version an alias (champion, challenger) names now",
        response_model=VersionOut,
    )
    def get_alias(name: ModelName, alias: AliasPath) -> Response:
        with deps.read_sessions() as session:
            number = version_by_alias(session, name, alias).number
            document = views.version_document(session, name, number)
        return Response(document, media_type="application/json")


def _version_response(deps: "ApiDeps", name: str, version: int) -> Response:
    with deps.read_sessions() as session:
        document = views.version_document(session, name, version)
    return Response(document, media_type="application/json")


def audit_entry_out(entry: ModelAudit) -> AuditEntryOut:
    return AuditEntryOut(**{name: getattr(entry, name) for name in AuditEntryOut.model_fields})
