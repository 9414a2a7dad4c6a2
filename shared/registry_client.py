"""The one client of the registry's REST API (``/api/v1``), reading its answers into the registry's own
bodies (``shared.registry_models``): no dict leaves it.

One policy for every call: a transient failure (``shared.registry_errors.RegistryUnavailable``: no
connection, a timeout, 5xx, 429) is tried again with exponential back-off and jitter, waiting at least what a
``Retry-After`` asks, within the client's :class:`RetryBudget`; the last failure is raised once the budget
is spent. A refusal (any other 4xx) is raised at once, typed, with the registry's message. A write is
retried only when the registry surely did not apply it (no connection made, or 429 or 503): a rollback
sent twice would roll back twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from shared.artifacts import DigestMismatch, SizeMismatch
from shared.events import ArtifactRef
from shared.registry_errors import RegistryBadAnswer, RegistryUnavailable, model_path, raise_for, unreachable
from shared.registry_models import (
    Alias,
    ArchiveRequest,
    ArtifactHeadOut,
    AuditEntryOut,
    AuditPage,
    DeploymentAction,
    DeploymentChangeOut,
    DeploymentOut,
    EvaluationOut,
    HistoryEntryOut,
    HistoryPage,
    LineageOut,
    ModelEdit,
    ModelOut,
    ModelPage,
    PromoteAction,
    RollbackAction,
    SetCanaryWeightAction,
    UploadOut,
    VersionEdit,
    VersionOut,
    VersionPage,
    VersionStatus,
)

log = logging.getLogger(__name__)
API = "/api/v1"
MAX_PAGE = 200
EVALUATIONS = TypeAdapter(list[EvaluationOut])

T = TypeVar("T")
ItemT = TypeVar("ItemT", covariant=True)


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RetryBudget:
    """How hard one call tries: at most ``attempts`` tries (None: no count) started within ``total_s``;
    waits grow from ``first_wait_s`` to ``max_wait_s``; ``give_up`` ends the retries early (shutdown)."""

    attempts: int | None = 4
    total_s: float = 30.0
    first_wait_s: float = 0.2
    max_wait_s: float = 5.0
    give_up: Callable[[], bool] = field(default=_never)


class _Page(Protocol[ItemT]):
    @property
    def items(self) -> Sequence[ItemT]: ...
    @property
    def next_cursor(self) -> str | None: ...


class _GiveUp(stop_base):
    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._check()


class RegistryClient:
    """A keep-alive client of one registry. Build it with :meth:`connect`, or over an ``httpx.Client``
    whose ``base_url`` is the registry (a test's ``TestClient``)."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        token: str | None = None,
        budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = http
        self._token = token
        self.budget = budget or RetryBudget()
        self._sleep = sleep

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        token: str | None = None,
        budget: RetryBudget | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RegistryClient:
        """A client of the registry at ``base_url`` (e.g. ``http://127.0.0.1:8000``)."""
        http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)
        return cls(http, token=token, budget=budget, sleep=sleep)

    def close(self) -> None:
        self._http.close()

    # --- reads --------------------------------------------------------------------------------------

    def models(self, *, page_size: int = MAX_PAGE, name_prefix: str | None = None) -> Iterator[ModelOut]:
        """Every registered model, by name, through every page (only names starting with ``name_prefix``)."""
        params = {"name": name_prefix} if name_prefix else {}
        return self._pages("/models", ModelPage.model_validate_json, params, page_size)

    def model(self, name: str) -> ModelOut:
        return self._get(model_path(name), ModelOut.model_validate_json)

    def versions(
        self, name: str, *, status: VersionStatus | None = None, page_size: int = MAX_PAGE
    ) -> Iterator[VersionOut]:
        """The model's versions, newest first, through every page (only those of ``status`` if given)."""
        params = {"status": status} if status else {}
        return self._pages(f"{model_path(name)}/versions", VersionPage.model_validate_json, params, page_size)

    def version(self, name: str, version: int) -> VersionOut:
        return self._get(f"{model_path(name)}/versions/{int(version)}", VersionOut.model_validate_json)

    def evaluations(self, name: str, version: int, *, limit: int = MAX_PAGE) -> list[EvaluationOut]:
        """The version's evaluations with their reports, newest first (the newest ``limit``)."""
        path = f"{model_path(name)}/versions/{int(version)}/evaluations"
        return self._get(path, EVALUATIONS.validate_json, params={"limit": limit})

    def lineage(self, name: str, version: int) -> LineageOut:
        return self._get(f"{model_path(name)}/versions/{int(version)}/lineage", LineageOut.model_validate_json)

    def deployment(self, name: str) -> DeploymentOut:
        """What the model serves now (revision 0 and no versions when it was never deployed)."""
        return self._get(f"{model_path(name)}/deployment", DeploymentOut.model_validate_json)

    def history(self, name: str, *, page_size: int = MAX_PAGE) -> Iterator[HistoryEntryOut]:
        """The model's deployment changes, newest first, through every page."""
        path = f"{model_path(name)}/deployment/history"
        return self._pages(path, HistoryPage.model_validate_json, {}, page_size)

    def artifact(self, name: str, version: int, *, expected: ArtifactRef | None = None) -> bytes:
        """The version's artifact, checked against its size and sha256 (the version's, or ``expected``)
        before it is returned; SizeMismatch or DigestMismatch (ArtifactError) otherwise."""
        expected = expected or self.version(name, version).artifact
        path = f"{model_path(name)}/versions/{int(version)}/artifact"
        return self._call(lambda: self._download(path, expected))

    # --- writes (a bearer token) ---------------------------------------------------------------------

    def promote(
        self,
        name: str,
        version: int,
        *,
        reason: str,
        stage: Literal["canary", "champion"] | None = None,
        canary_weight: float | None = None,
        shadow: bool | None = None,
        force: bool = False,
    ) -> DeploymentChangeOut:
        """Make ``version`` the champion, or the challenger with a canary weight (or stage="canary")."""
        action = PromoteAction(
            action="promote",
            version=version,
            stage=stage,
            canary_weight=canary_weight,
            shadow=shadow,
            force=force,
            reason=reason,
        )
        return self.change_deployment(name, action)

    def set_canary_weight(
        self, name: str, canary_weight: float, *, reason: str, shadow: bool | None = None
    ) -> DeploymentChangeOut:
        action = SetCanaryWeightAction(
            action="set_canary_weight", canary_weight=canary_weight, shadow=shadow, reason=reason
        )
        return self.change_deployment(name, action)

    def rollback(self, name: str, *, reason: str, version: int | None = None) -> DeploymentChangeOut:
        """Withdraw the challenger, or replace the champion (``version``, default the current one)."""
        return self.change_deployment(name, RollbackAction(action="rollback", version=version, reason=reason))

    def change_deployment(self, name: str, action: DeploymentAction) -> DeploymentChangeOut:
        path = f"{model_path(name)}/deployment"
        body = action.model_dump(mode="json", exclude_none=True)
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        response = self._call(lambda: self._send("POST", path, json=body, headers=headers), idempotent=False)
        return _parsed(response, DeploymentChangeOut.model_validate_json, path)

    # --- the one policy ----------------------------------------------------------------------------

    def _get(self, path: str, parse: Callable[[bytes], T], params: dict[str, Any] | None = None) -> T:
        response = self._call(lambda: self._send("GET", path, params=params))
        return _parsed(response, parse, path)

    def _pages(
        self, path: str, parse: Callable[[bytes], _Page[T]], params: dict[str, Any], page_size: int
    ) -> Iterator[T]:
        """The one pager: every item of every page, following ``next_cursor`` until it is null."""
        cursor: str | None = None
        while True:
            found = self._get(
                path, parse, params={**params, "limit": page_size, **({"cursor": cursor} if cursor else {})}
            )
            yield from found.items
            cursor = found.next_cursor
            if cursor is None:
                return

    def _call(self, attempt: Callable[[], T], *, idempotent: bool = True) -> T:
        """``attempt`` under the retry budget: transient failures again, the rest at once."""
        budget = self.budget
        stop = stop_before_delay(budget.total_s) | _GiveUp(budget.give_up)
        if budget.attempts is not None:
            stop = stop | stop_after_attempt(budget.attempts)
        retrying = Retrying(
            retry=retry_if_exception(
                lambda error: isinstance(error, RegistryUnavailable) and (idempotent or error.unsent)
            ),
            wait=_waits(budget),
            stop=stop,
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(attempt)

    def _url(self, path: str) -> str:
        return f"{API}{path}"

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One exchange; the response when it is 2xx, else the error it means."""
        try:
            response = self._http.request(method, self._url(path), **options)
        except httpx.HTTPError as error:
            raise unreachable(self._http.base_url, method, path, error) from error
        raise_for(response, method, path)
        return response

    def _download(self, path: str, expected: ArtifactRef) -> bytes:
        try:
            with self._http.stream("GET", self._url(path)) as response:
                if response.status_code >= 300:
                    response.read()
                raise_for(response, "GET", path)
                announced = response.headers.get("x-ferry-sha256")
                if announced is not None and announced != expected.sha256:
                    raise DigestMismatch(expected.sha256, announced)
                digest, chunks, size = hashlib.sha256(), [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > expected.size_bytes:  # never hold more than the version's size
                        raise SizeMismatch(expected.sha256, expected.size_bytes, size)
                    digest.update(chunk)
                    chunks.append(chunk)
        except httpx.HTTPError as error:
            raise unreachable(self._http.base_url, "GET", path, error) from error
        if size != expected.size_bytes:
            raise SizeMismatch(expected.sha256, expected.size_bytes, size)
        if digest.hexdigest() != expected.sha256:
            raise DigestMismatch(expected.sha256, digest.hexdigest())
        return b"".join(chunks)

    # --- descriptions, tags, archive, aliases, HEAD --------------------------------------------------

    def edit_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        reason: str | None = None,
    ) -> ModelOut:
        """Set the model's description and merge ``tags`` (a None value removes the tag); needs a token."""
        edit = ModelEdit(description=description, tags=dict(tags) if tags is not None else None, reason=reason)
        return self._write("PATCH", model_path(name), edit, ModelOut.model_validate_json)

    def edit_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        archive: bool = False,
        reason: str | None = None,
    ) -> VersionOut:
        """Set a version's description, merge its tags, archive it with ``archive``; needs a token."""
        edit = VersionEdit(
            description=description,
            tags=dict(tags) if tags is not None else None,
            status="archived" if archive else None,
            reason=reason,
        )
        return self._write("PATCH", f"{model_path(name)}/versions/{int(version)}", edit, VersionOut.model_validate_json)

    def archive_version(self, name: str, version: int, *, reason: str | None = None) -> VersionOut:
        """Archive a version that is neither champion nor challenger (RegistryConflict if it is); needs a token."""
        path = f"{model_path(name)}/versions/{int(version)}/archive"
        return self._write("POST", path, ArchiveRequest(reason=reason), VersionOut.model_validate_json)

    def audit(self, name: str, *, page_size: int = MAX_PAGE) -> Iterator[AuditEntryOut]:
        """Edits and archives of the model and its versions, newest first, through every page."""
        return self._pages(f"{model_path(name)}/audit", AuditPage.model_validate_json, {}, page_size)

    def alias(self, name: str, alias: Alias) -> VersionOut:
        """The version ``alias`` (champion, challenger) names now; RegistryNotFound when none."""
        return self._get(f"{model_path(name)}/aliases/{alias}", VersionOut.model_validate_json)

    def artifact_by_alias(self, name: str, alias: Alias) -> tuple[VersionOut, bytes]:
        """The version an alias names and its artifact, verified against that version's size and sha256.

        Downloaded by the version's number, not by the alias: a promotion in between cannot mix two versions.
        """
        found = self.alias(name, alias)
        return found, self.artifact(name, found.version, expected=found.artifact)

    def artifact_head(self, name: str, version: int) -> ArtifactHeadOut:
        """What HEAD on the version's artifact says: its recorded sha256 and size, and the media type."""
        path = f"{model_path(name)}/versions/{int(version)}/artifact"
        response = self._call(lambda: self._send("HEAD", path))
        try:
            return ArtifactHeadOut(
                sha256=response.headers["x-ferry-sha256"],
                size_bytes=int(response.headers["content-length"]),
                content_type=response.headers["content-type"],
            )
        except (KeyError, ValueError, ValidationError) as error:
            raise RegistryBadAnswer(f"the registry's answer to HEAD {path} lacks its headers: {error}") from error

    def register_artifact(
        self, name: str, artifact: bytes, *, dataset: str, metrics: Mapping[str, float] | None = None
    ) -> UploadOut:
        """Upload an ONNX file trained elsewhere for ``dataset``; the registry checks, stores and announces it
        (the version appears once its ``model.trained`` is consumed). Needs a token; sent once, never retried
        after a connection was made. The registry answers once it has checked the file (ONNX Runtime loads and
        runs it): give the client a timeout for that (``connect(timeout_s=…)``)."""
        params = {"dataset": dataset, **({"metrics": json.dumps(dict(metrics))} if metrics else {})}
        headers = {"Content-Type": "application/octet-stream"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        path = f"{model_path(name)}/versions"
        options = {"content": artifact, "params": params, "headers": headers}
        response = self._call(lambda: self._send("POST", path, **options), idempotent=False)
        return _parsed(response, UploadOut.model_validate_json, path)

    def _write(self, method: str, path: str, body: BaseModel, parse: Callable[[bytes], T]) -> T:
        """A write with the bearer token, retried only when the registry surely did not apply it."""
        payload = body.model_dump(mode="json", exclude_none=True)
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        response = self._call(lambda: self._send(method, path, json=payload, headers=headers), idempotent=False)
        return _parsed(response, parse, path)


def _waits(budget: RetryBudget) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(multiplier=budget.first_wait_s, max=budget.max_wait_s, jitter=budget.first_wait_s)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = error.retry_after_s if isinstance(error, RegistryUnavailable) else None
        return max(asked or 0.0, backoff(state))

    return wait


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("%s; trying again in %.1fs (attempt %d)", error, state.upcoming_sleep, state.attempt_number + 1)


def _parsed(response: httpx.Response, parse: Callable[[bytes], T], path: str) -> T:
    try:
        return parse(response.content)
    except ValidationError as error:
        raise RegistryBadAnswer(f"the registry's answer to {path} is not what it documents: {error}") from error
