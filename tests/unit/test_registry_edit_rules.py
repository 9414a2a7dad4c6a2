"""Edits, archiving and aliases: the pure rules, and the service over the in-memory fake."""

from __future__ import annotations

import pytest

from services.registry.adapters.memory import MemoryDatabase
from services.registry.domain import (
    AliasNotFound,
    DeploymentState,
    InvalidEdit,
    VersionInUse,
    VersionNotFound,
    alias_target,
    check_archivable,
    merge_tags,
)
from services.registry.service import edit_model, edit_version, version_from_event
from shared.envelope import EventMeta
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id, utc_now
from shared.registry_models import ModelEdit, VersionEdit


def test_tags_merge_and_null_removes() -> None:
    merged, changes = merge_tags({"a": "1", "b": "2"}, {"a": None, "b": "2", "c": "3", "gone": None}, max_tags=10)
    assert merged == {"b": "2", "c": "3"}
    assert changes == {"tags.a": {"from": "1", "to": None}, "tags.c": {"from": None, "to": "3"}}
    with pytest.raises(InvalidEdit) as too_many:
        merge_tags({"a": "1"}, {"b": "2"}, max_tags=1)
    assert too_many.value.field == "tags"
    assert merge_tags({"a": "1", "b": "2"}, {"a": None}, max_tags=1)[0] == {"b": "2"}  # fewer is always fine


def test_only_an_undeployed_version_is_archivable_and_aliases_name_the_deployed() -> None:
    state = DeploymentState(champion=2, challenger=3)
    with pytest.raises(VersionInUse, match="is the champion"):
        check_archivable("digits", 2, state)
    with pytest.raises(VersionInUse, match="is the challenger"):
        check_archivable("digits", 3, state)
    check_archivable("digits", 1, state)
    assert alias_target("digits", "champion", state) == 2 and alias_target("digits", "challenger", state) == 3
    with pytest.raises(AliasNotFound, match="'challenger'"):
        alias_target("digits", "challenger", DeploymentState(champion=1))
    with pytest.raises(AliasNotFound, match="no alias 'latest'"):
        alias_target("digits", "latest", state)


def stored_version(database: MemoryDatabase) -> None:
    event = ModelTrained(
        model_name="digits",
        request_id=new_id(),
        signature=Signature(
            inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
            outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 3])],
        ),
        dataset="sklearn:iris",
        split_id="s",
        artifact=ArtifactRef(uri="u", sha256="0" * 64, size_bytes=1, format="onnx"),
        arch="mlp",
        hyperparameters=Hyperparameters(),
    )
    meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
    with database.uow() as uow:
        model_id, number = uow.repo.next_version_number("digits")
        version = version_from_event(event, meta, artifact_uri="u")
        version.model_id, version.number = model_id, number
        uow.repo.add_version(version)
        uow.commit()


def test_the_service_edits_audits_and_refuses_without_a_trace() -> None:
    database = MemoryDatabase()
    stored_version(database)
    edited = edit_model("digits", ModelEdit(description="d", tags={"t": "1"}), uow=database.uow(), actor="user:a")
    assert set(edited.changes) == {"description", "tags.t"}
    assert edit_model("digits", ModelEdit(tags={"t": "1"}), uow=database.uow(), actor="user:a").changes == {}
    archived = edit_version("digits", 1, VersionEdit(status="archived"), uow=database.uow(), actor="user:a")
    assert archived.changes == {"status": {"from": "registered", "to": "archived"}}
    audit = database.state.audit
    assert [(entry.version, entry.action, entry.actor) for entry in audit] == [
        (None, "edit", "user:a"),
        (1, "archive", "user:a"),
    ]
    many = ModelEdit(tags={f"k{n}": "v" for n in range(100)})
    with pytest.raises(InvalidEdit):
        edit_model("digits", many, uow=database.uow(), actor="user:a")
    assert database.state.models["digits"].tags == {"t": "1"} and len(database.state.audit) == 2  # rolled back
    with pytest.raises(VersionNotFound):
        edit_version("digits", 9, VersionEdit(description="x"), uow=database.uow(), actor="user:a")
