"""A version's fields are declared once (the ``model_versions`` table); the API's layout, the documents
PostgreSQL builds, the schemas and the handler derive from it. These tests hold the rest together: the
API models that are declared by hand, and the columns the handler sets by name. (The migrations are held to
the table by test_registry_migrations; the documents to the ORM mapping by test_registry_api.)"""

from __future__ import annotations

from pathlib import Path

from services.registry.adapters.orm import INTERNAL_VERSION_COLUMNS, ModelVersion, version_columns, version_layout
from services.registry.entrypoints.schemas import TRAINING_RENAMES, version_fields
from services.registry.service import copied_version_columns, version_from_event
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id, utc_now
from shared.registry_models import TrainingOut, VersionOut


def event() -> ModelTrained:
    signature = Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])], outputs=[])
    return ModelTrained(
        model_name="digits",
        request_id="req-1",
        signature=signature,
        dataset="sklearn:digits",
        split_id="s1",
        artifact=ArtifactRef(uri="/ignored", sha256="a" * 64, size_bytes=3, format="onnx"),
        arch="mlp",
        hyperparameters=Hyperparameters(epochs=2),
        metrics={"val_accuracy": 0.9, "bad": float("nan")},
        teacher_version=4,
    )


def test_the_api_shows_every_public_column_once() -> None:
    layout = version_layout()
    assert set(VersionOut.model_fields) == {"model_name", "artifact", *layout.fields}
    assert set(ArtifactRef.model_fields) == set(layout.artifact)
    mapped = [*layout.fields.values(), *layout.artifact.values(), *INTERNAL_VERSION_COLUMNS]
    assert sorted(mapped) == sorted(version_columns())  # no column forgotten, none shown twice
    assert layout.timestamps == {"created_at", "updated_at"}


def test_training_out_is_a_renamed_subset_of_version_out() -> None:
    for name, field in TrainingOut.model_fields.items():
        source = TRAINING_RENAMES.get(name, name)
        api_name = next(api for api, column in version_layout().fields.items() if column == source)
        assert VersionOut.model_fields[api_name].annotation == field.annotation, name


def test_the_handler_sets_every_column_but_the_numbering(tmp_path: Path) -> None:
    meta = EventMeta(event_id=new_id(), source="t", time=utc_now(), traceparent=None, type_name="x")
    store = ArtifactStore(str(tmp_path))
    version = version_from_event(event(), meta, artifact_uri=store.uri("a" * 64))
    assert set(version_columns()) - set(vars(version)) == {"id", "model_id", "number"}
    assert set(copied_version_columns()) == {
        "signature",
        "metrics",
        "dataset",
        "split_id",
        "arch",
        "hyperparameters",
        "compression",
        "timings",
        "slices",
        "input_reference",
        "cause",
    }
    assert version.metrics == {"val_accuracy": 0.9} and version.tags["non_finite_metrics"] == "bad"
    assert (version.artifact_uri, version.parent_model, version.parent_version) == (store.uri("a" * 64), "digits", 4)
    version.number, version.model_id = 1, 7
    shown = VersionOut.model_validate(version_fields("digits", version))
    assert (shown.version, shown.artifact.uri, shown.hyperparameters["epochs"]) == (1, store.uri("a" * 64), 2)
    assert isinstance(version, ModelVersion)
