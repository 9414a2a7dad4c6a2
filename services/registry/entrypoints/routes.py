"""The /api/v1 routes: thin — parse, call a view or the decision handler, map to the response body.

No ``from __future__ import annotations`` here: FastAPI must resolve the endpoints' annotations,
some of which name objects local to the router's builder.
"""

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter

from services.registry.adapters import views
from services.registry.adapters.repository import retry_conflicts
from services.registry.domain import Decision, actor_for
from services.registry.entrypoints.artifact_routes import add_artifact_routes
from services.registry.entrypoints.edit_routes import add_edit_routes
from services.registry.entrypoints.schemas import (
    decode_cursor,
    decode_name_cursor,
    deployment_out,
    encode_cursor,
    encode_name_cursor,
    evaluation_out,
    history_entry_out,
    model_out,
    training_out,
)
from services.registry.entrypoints.upload_routes import add_upload_routes
from services.registry.handlers import handle_deployment_command
from services.registry.service import artifact_of
from services.registry.settings import RegistrySettings
from shared.credentials import TokenCheck
from shared.events import INT32_MAX, MODEL_NAME_PATTERN, Signature
from shared.http_auth import bearer_user
from shared.registry_models import (
    DeploymentAction,
    DeploymentChangeOut,
    DeploymentOut,
    ErrorOut,
    EvaluationOut,
    HistoryPage,
    LineageOut,
    ModelOut,
    ModelPage,
    PromoteAction,
    RollbackAction,
    ValidationErrorOut,
    VersionOut,
    VersionPage,
    VersionStatus,
)

if TYPE_CHECKING:
    from services.registry.entrypoints.api import ApiDeps

log = logging.getLogger(__name__)
EVALUATIONS = TypeAdapter(list[EvaluationOut])

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="the model's name")]
VersionPath = Annotated[int, Path(ge=1, le=INT32_MAX, description="the version number, from 1")]
Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]
NamePrefix = Annotated[
    str | None,
    Query(max_length=128, pattern=r"^[A-Za-z0-9_.-]*$", description="only the models whose name starts with this"),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "unknown model or version"},
    422: {"model": ValidationErrorOut, "description": "invalid parameters"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorOut, "description": "no bearer token"},
    403: {"model": ErrorOut, "description": "wrong token, or writes disabled (no token configured)"},
    409: {"model": ErrorOut, "description": "the decision cannot apply (a rejected version without force, …)"},
}


def models_router(settings: RegistrySettings, deps: "ApiDeps") -> APIRouter:
    """The router of models, versions, artifacts, evaluations, lineage and deployments."""
    router = APIRouter(tags=["models"], responses=ERRORS)
    _add_model_routes(router, deps)
    _add_version_routes(router, deps)
    _add_version_detail_routes(router, deps)
    add_artifact_routes(router, deps)
    _add_deployment_routes(router, settings, deps)
    add_edit_routes(router, deps, writer_guard(deps.tokens))
    add_upload_routes(router, settings, deps, writer_guard(deps.tokens))
    return router


def _page_position(cursor: str | None) -> int | None:
    return decode_cursor(cursor) if cursor is not None else None


def _add_model_routes(router: APIRouter, deps: "ApiDeps") -> None:
    @router.get("/models", summary="List models by name")
    def list_models(limit: Limit = 50, cursor: Cursor = None, name: NamePrefix = None) -> ModelPage:
        after = decode_name_cursor(cursor) if cursor is not None else None
        with deps.read_sessions() as session:
            rows = views.list_models(session, after=after, limit=limit + 1, prefix=name)
            items = [model_out(model, deployment) for model, deployment in rows[:limit]]
        next_cursor = encode_name_cursor(items[-1].name) if len(rows) > limit else None
        return ModelPage(items=items, next_cursor=next_cursor)

    @router.get("/models/{name}", summary="One model, with its current champion and challenger")
    def get_model(name: ModelName) -> ModelOut:
        with deps.read_sessions() as session:
            model = views.model_by_name(session, name)
            return model_out(model, views.get_deployment(session, model))


def _add_version_routes(router: APIRouter, deps: "ApiDeps") -> None:
    # The two hottest reads send the JSON documents PostgreSQL built (views._document) as they are;
    # response_model documents them, and a test holds the documents to that model.
    @router.get("/models/{name}/versions", summary="Versions of a model, newest first", response_model=VersionPage)
    def list_versions(
        name: ModelName, status: VersionStatus | None = None, limit: Limit = 50, cursor: Cursor = None
    ) -> Response:
        before = _page_position(cursor)
        with deps.read_sessions() as session:
            rows = views.version_documents(session, name, status=status, before=before, limit=limit + 1)
        next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
        items = ",".join(document for _, document in rows[:limit])
        body = f'{{"items":[{items}],"next_cursor":{json.dumps(next_cursor)}}}'
        return Response(body, media_type="application/json")

    @router.get("/models/{name}/versions/{version}", summary="One version", response_model=VersionOut)
    def get_version(name: ModelName, version: VersionPath) -> Response:
        with deps.read_sessions() as session:
            document = views.version_document(session, name, version)
        return Response(document, media_type="application/json")


def _add_version_detail_routes(router: APIRouter, deps: "ApiDeps") -> None:
    @router.get(
        "/models/{name}/versions/{version}/evaluations",
        summary="Evaluations of a version, newest first",
        response_model=list[EvaluationOut],
    )
    def list_evaluations(name: ModelName, version: VersionPath, limit: Limit = 50) -> Response:
        with deps.read_sessions() as session:
            model_id = views.get_version(session, name, version).model_id
            rows = [evaluation_out(row) for row in views.list_evaluations(session, model_id, version, limit=limit)]
        # Built and checked once: FastAPI would validate every report again on the way out.
        return Response(EVALUATIONS.dump_json(rows), media_type="application/json")

    @router.get(
        "/models/{name}/versions/{version}/lineage", summary="Training request → artifact → evaluations → deployments"
    )
    def get_lineage(name: ModelName, version: VersionPath) -> LineageOut:
        with deps.read_sessions() as session:
            found = views.get_version(session, name, version)
            evaluations = views.list_evaluations(session, found.model_id, version, limit=200)
            history = views.list_history(session, found.model_id, version=version, limit=200)
            return _lineage(name, found, evaluations, history)


def _lineage(name: str, found: Any, evaluations: list[Any], history: list[Any]) -> LineageOut:
    return LineageOut(
        model_name=name,
        version=found.number,
        status=found.status,
        training=training_out(found),
        artifact=artifact_of(found),
        signature=Signature(**found.signature),
        metrics=found.metrics,
        evaluations=[evaluation_out(row) for row in evaluations],
        deployments=[history_entry_out(row) for row in reversed(history)],
    )


def writer_guard(tokens: Mapping[str, str]) -> Callable[..., str]:
    """The dependency that lets a write through only with a configured bearer token; it yields the token's user."""
    bearer = HTTPBearer(auto_error=False, description="a token of FERRY_REGISTRY_TOKENS_FILE (or FERRY_API_TOKEN)")
    check = TokenCheck(tokens)

    def require_writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return bearer_user(
            check, credentials, disabled="writes are disabled: set FERRY_REGISTRY_TOKENS_FILE or FERRY_API_TOKEN"
        )

    return require_writer


def _add_deployment_routes(router: APIRouter, settings: RegistrySettings, deps: "ApiDeps") -> None:
    @router.get("/models/{name}/deployment", summary="What the model serves now")
    def get_deployment(name: ModelName) -> DeploymentOut:
        with deps.read_sessions() as session:
            model = views.model_by_name(session, name)
            return deployment_out(name, views.get_deployment(session, model))

    @router.get("/models/{name}/deployment/history", summary="Deployment changes, newest first")
    def get_history(name: ModelName, limit: Limit = 50, cursor: Cursor = None) -> HistoryPage:
        before = _page_position(cursor)
        with deps.read_sessions() as session:
            model = views.model_by_name(session, name)
            rows = views.list_history(session, model.id, before=before, limit=limit + 1)
            items = [history_entry_out(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1].revision) if len(rows) > limit else None
        return HistoryPage(items=items, next_cursor=next_cursor)

    writer = writer_guard(deps.tokens)

    @router.post(
        "/models/{name}/deployment", summary="Promote, set the canary weight, or roll back", responses=WRITE_ERRORS
    )
    def change_deployment(
        name: ModelName, action: Annotated[DeploymentAction, Body()], user: Annotated[str, Depends(writer)]
    ) -> DeploymentChangeOut:
        decision = decision_of(name, action, actor_for(user))
        outcome = retry_conflicts(
            lambda: handle_deployment_command(
                decision, uow=deps.uow_factory(), default_canary_weight=settings.default_canary_weight
            )
        )
        with deps.read_sessions() as session:
            model = views.model_by_name(session, name)
            current = deployment_out(name, views.get_deployment(session, model))
        return DeploymentChangeOut(**current.model_dump(), changed=outcome.deployment_changed)


def decision_of(name: str, action: Any, actor: str) -> Decision:
    """The domain decision a request body asks for."""
    if isinstance(action, PromoteAction):
        return Decision(
            model_name=name,
            kind="promote",
            reason=action.reason,
            actor=actor,
            version=action.version,
            stage=action.stage,
            canary_weight=action.canary_weight,
            shadow=action.shadow,
            force=action.force,
        )
    if isinstance(action, RollbackAction):
        return Decision(model_name=name, kind="rollback", reason=action.reason, actor=actor, version=action.version)
    return Decision(
        model_name=name,
        kind="set_canary_weight",
        reason=action.reason,
        actor=actor,
        canary_weight=action.canary_weight,
        shadow=action.shadow,
    )
