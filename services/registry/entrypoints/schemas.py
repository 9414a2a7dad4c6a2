"""The registry's side of the REST bodies: opaque pagination cursors, and each response built from its rows.

The bodies themselves live in ``shared.registry_models``, the same classes the registry client reads.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from services.registry.adapters.orm import (
    Deployment,
    DeploymentHistory,
    Evaluation,
    ModelVersion,
    RegisteredModel,
    version_layout,
)
from shared.events import MODEL_NAME_PATTERN
from shared.registry_models import DeploymentOut, EvaluationOut, HistoryEntryOut, ModelOut, TrainingOut


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not hand out."""


def _encode(tag: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{tag}{value}".encode()).decode().rstrip("=")


def _decode(cursor: str, tag: str) -> str:
    """The value inside a cursor of this kind (``tag``); InvalidCursor when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise InvalidCursor("invalid cursor") from error
    if not text.startswith(tag):
        raise InvalidCursor("invalid cursor")
    return text[len(tag) :]


def encode_cursor(position: int) -> str:
    """An opaque cursor for the page after ``position``."""
    return _encode("p", str(position))


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for; InvalidCursor when it is not one of ours."""
    value = _decode(cursor, "p")
    if not value.isdigit() or len(value) > 11:
        raise InvalidCursor("invalid cursor")
    return int(value)


def encode_name_cursor(name: str) -> str:
    """An opaque cursor for the page after the model ``name``."""
    return _encode("n", name)


def decode_name_cursor(cursor: str) -> str:
    """The model name a cursor stands for; InvalidCursor when it is not one of ours."""
    value = _decode(cursor, "n")
    if not re.fullmatch(MODEL_NAME_PATTERN, value):
        raise InvalidCursor("invalid cursor")
    return value


def model_out(model: RegisteredModel, deployment: Deployment | None) -> ModelOut:
    """A model as the API shows it, with its current champion and challenger."""
    return ModelOut(
        name=model.name,
        description=model.description,
        tags=model.tags,
        latest_version=model.latest_version,
        champion=deployment.champion_version if deployment else None,
        challenger=deployment.challenger_version if deployment else None,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def version_fields(model_name: str, version: ModelVersion) -> dict[str, Any]:
    """A VersionOut's fields as plain data, following the one layout (orm.version_layout) the views use too."""
    layout = version_layout()
    fields: dict[str, Any] = {name: getattr(version, column) for name, column in layout.fields.items()}
    fields["artifact"] = {name: getattr(version, column) for name, column in layout.artifact.items()}
    fields["model_name"] = model_name
    return fields


def evaluation_out(evaluation: Evaluation) -> EvaluationOut:
    return EvaluationOut(**{name: getattr(evaluation, name) for name in EvaluationOut.model_fields})


def deployment_out(model_name: str, deployment: Deployment | None) -> DeploymentOut:
    """The deployment of a model; a model never deployed serves nothing at revision 0."""
    if deployment is None:
        return DeploymentOut(
            model_name=model_name,
            champion=None,
            challenger=None,
            canary_weight=0.0,
            shadow=False,
            revision=0,
            updated_at=None,
        )
    return DeploymentOut(
        model_name=model_name,
        champion=deployment.champion_version,
        challenger=deployment.challenger_version,
        canary_weight=deployment.canary_weight,
        shadow=deployment.shadow,
        revision=deployment.revision,
        updated_at=deployment.updated_at,
    )


def history_entry_out(entry: DeploymentHistory) -> HistoryEntryOut:
    return HistoryEntryOut(**{name: getattr(entry, name) for name in HistoryEntryOut.model_fields})


TRAINING_RENAMES = {"request_id": "training_request_id"}


def training_out(version: ModelVersion) -> TrainingOut:
    """Where a version came from (TrainingOut renames ``training_request_id`` to ``request_id``)."""
    return TrainingOut(
        **{name: getattr(version, TRAINING_RENAMES.get(name, name)) for name in TrainingOut.model_fields}
    )
