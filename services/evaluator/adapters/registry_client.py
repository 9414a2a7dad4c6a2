"""The registry's REST API as the evaluator reads it: versions, deployments, history, evaluations.

The registry is the system of record; the evaluator only reads it here (its decisions travel as
``model.decided`` events). A registry that does not answer, or answers 5xx, is a TransientError: the
consumer loop retries the event, the bake thread looks again later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from services.evaluator.domain.records import DeploymentRecord, EvaluationRecord, HistoryRecord, VersionRecord
from shared.errors import PermanentError, TransientError
from shared.events import ArtifactRef, Signature

API = "/api/v1"
PAGE = 200


class RegistryClient:
    """A keep-alive HTTP client of one registry."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None):
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any | None:
        """The JSON body; None on 404; TransientError when the registry is away or failing."""
        try:
            response = self._client.get(f"{API}{path}", params=params)
        except httpx.HTTPError as error:
            raise TransientError(f"registry unreachable at {self._client.base_url}: {error}") from error
        if response.status_code == 404:
            return None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"registry answered {response.status_code} for {path}")
        if response.status_code != 200:
            raise PermanentError(f"registry refused {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def version(self, model_name: str, version: int) -> VersionRecord | None:
        body = self._get(f"/models/{model_name}/versions/{version}")
        if body is None:
            return None
        return VersionRecord(
            model_name=model_name,
            version=int(body["version"]),
            status=str(body["status"]),
            artifact=ArtifactRef.model_validate(body["artifact"]),
            signature=Signature.model_validate(body["signature"]),
            dataset=str(body["dataset"]),
            split_id=str(body["split_id"]),
            compression=body.get("compression") or {},
        )

    def deployment(self, model_name: str) -> DeploymentRecord | None:
        body = self._get(f"/models/{model_name}/deployment")
        if body is None:
            return None
        return DeploymentRecord(
            champion=body["champion"],
            challenger=body["challenger"],
            canary_weight=float(body["canary_weight"]),
            revision=int(body["revision"]),
        )

    def history(self, model_name: str, *, limit: int = PAGE) -> list[HistoryRecord]:
        """The newest ``limit`` deployment changes, newest first."""
        body = self._get(f"/models/{model_name}/deployment/history", {"limit": min(limit, PAGE)})
        if body is None:
            return []
        return [
            HistoryRecord(
                revision=int(item["revision"]),
                action=str(item["action"]),
                from_champion=item["from_champion"],
                to_champion=item["to_champion"],
                from_challenger=item["from_challenger"],
                to_challenger=item["to_challenger"],
                to_canary_weight=float(item["to_canary_weight"]),
                actor=str(item["actor"]),
                reason=str(item["reason"]),
                created_at=datetime.fromisoformat(item["created_at"]),
            )
            for item in body["items"]
        ]

    def evaluations(self, model_name: str, version: int) -> list[EvaluationRecord]:
        body = self._get(f"/models/{model_name}/versions/{version}/evaluations", {"limit": PAGE})
        return [
            EvaluationRecord(
                candidate_version=int(item["candidate_version"]),
                decision=str(item["decision"]),
                stage=item.get("stage"),
                actor=str(item["actor"]),
                source_event_id=item.get("source_event_id"),
            )
            for item in body or []
        ]

    def evaluation_reports(self, model_name: str, version: int) -> list[dict[str, Any]]:
        """The stored evaluations of a version with their reports, newest first (for ``ferry compare``)."""
        return list(self._get(f"/models/{model_name}/versions/{version}/evaluations", {"limit": PAGE}) or [])

    def model_names(self) -> list[str]:
        """Every registered model's name, through the pages."""
        names: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
            body = self._get("/models", params) or {"items": [], "next_cursor": None}
            names.extend(str(item["name"]) for item in body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return names
