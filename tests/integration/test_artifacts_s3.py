"""The artifact store on ``s3://``, against a real S3 server (SeaweedFS): trainer put, registry check, serving fetch.

Each service builds its store as its bootstrap does (``ArtifactStore.from_settings``), with the endpoint from
the settings and the key pair from the environment, as boto3 reads it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from services.registry.domain import ArtifactRejected
from services.registry.service import verified_artifact_uri
from services.trainer.adapters.completed import CompletedRequests
from shared.artifacts import ArtifactStore, DigestMismatch
from shared.errors import TransientError
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec
from shared.local.seaweedfs import SeaweedFS
from shared.s3 import s3_options
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.s3]

BUCKET = "ferry-test"
THRESHOLD = 5 << 20  # S3's smallest part; an artifact above it goes up in parts


@pytest.fixture
def settings(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FerrySettings:
    """A store of this test's own (a fresh prefix) on the session's SeaweedFS, credentials in the environment."""
    for name, value in seaweedfs.credentials().environment().items():
        monkeypatch.setenv(name, value)
    return FerrySettings(
        home=tmp_path,
        artifact_root=f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/models",
        s3_endpoint_url=seaweedfs.endpoint_url,
        s3_region="us-east-1",
        s3_multipart_threshold_bytes=THRESHOLD,
    )


def ref(uri: str, *, sha256: str, size_bytes: int) -> ArtifactRef:
    return ArtifactRef(uri=uri, sha256=sha256, size_bytes=size_bytes, format="onnx")


def key_of(store: ArtifactStore, sha256: str) -> str:
    return store.uri(sha256).removeprefix(f"s3://{BUCKET}/")


def test_a_trained_artifact_goes_up_in_parts_is_registered_and_served(
    settings: FerrySettings, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    exported = tmp_path / "model.onnx"
    content = os.urandom(2 * THRESHOLD + 123)  # three parts
    exported.write_bytes(content)
    uri, sha256, size = ArtifactStore.from_settings(settings).put_file(exported)  # the trainer
    assert uri == f"{settings.artifact_root}/sha256/{sha256[:2]}/{sha256}.onnx" and size == len(content)

    registry = ArtifactStore.from_settings(settings)
    assert verified_artifact_uri(ref(uri, sha256=sha256, size_bytes=size), "digits", registry) == uri
    assert ArtifactStore.from_settings(settings).fetch(sha256, size_bytes=size) == content  # the gateway

    client = seaweedfs.client()
    prefix = settings.artifact_root.removeprefix(f"s3://{BUCKET}/")  # type: ignore[union-attr]
    head = client.head_object(Bucket=BUCKET, Key=key_of(registry, sha256))
    assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-3")  # a multipart upload
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    assert [item["Key"] for item in listed] == [key_of(registry, sha256)]  # nothing temporary left behind
    assert client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []
    assert ArtifactStore.from_settings(settings).put_file(exported) == (uri, sha256, size)  # again: a no-op


def test_a_tampered_object_and_a_foreign_key_are_refused(settings: FerrySettings, seaweedfs: SeaweedFS) -> None:
    store = ArtifactStore.from_settings(settings)
    content = b"onnx-bytes" * 1000
    uri, sha256, size = store.put_bytes(content)
    client = seaweedfs.client()

    foreign = f"s3://{BUCKET}/elsewhere/sha256/{sha256[:2]}/{sha256}.onnx"  # an intact copy, not the store's key
    client.put_object(Bucket=BUCKET, Key=foreign.removeprefix(f"s3://{BUCKET}/"), Body=content)
    for other in (foreign, uri.replace(BUCKET, "another-bucket", 1)):
        with pytest.raises(ArtifactRejected, match="is not the artifact store's key"):
            verified_artifact_uri(ref(other, sha256=sha256, size_bytes=size), "digits", store)

    client.put_object(Bucket=BUCKET, Key=key_of(store, sha256), Body=content[:-1] + b"!")  # behind the store's back
    with pytest.raises(ArtifactRejected, match="digest mismatch"):
        verified_artifact_uri(ref(uri, sha256=sha256, size_bytes=size), "digits", store)
    with pytest.raises(DigestMismatch):
        store.fetch(sha256, size_bytes=size)
    with pytest.raises(DigestMismatch):
        next(iter(store.stream_verified(sha256, size_bytes=size)))


def test_a_store_that_is_away_is_transient_and_nothing_is_lost_when_it_returns(
    settings: FerrySettings, seaweedfs: SeaweedFS
) -> None:
    store = ArtifactStore.from_settings(settings)
    uri, sha256, size = store.put_bytes(b"kept" * 500)
    reference = ref(uri, sha256=sha256, size_bytes=size)
    seaweedfs.stop()
    try:
        with pytest.raises(TransientError, match="unreachable"):
            verified_artifact_uri(reference, "digits", store)
        with pytest.raises(TransientError, match="unreachable"):
            store.fetch(sha256, size_bytes=size)
        with pytest.raises(TransientError, match="unreachable"):
            store.put_bytes(b"a new model" * 100)
    finally:
        seaweedfs.start()
    assert verified_artifact_uri(reference, "digits", store) == uri
    later_uri, later_sha256, later_size = store.put_bytes(b"a new model" * 100)  # the retry succeeds
    assert store.fetch(later_sha256, size_bytes=later_size) == b"a new model" * 100
    assert later_uri == store.uri(later_sha256)


def test_the_trainers_completed_requests_live_beside_the_artifacts(
    settings: FerrySettings, seaweedfs: SeaweedFS
) -> None:
    root = settings.resolved_artifact_root
    completed = CompletedRequests(root, s3=s3_options(settings))
    event = ModelTrained(
        model_name="m",
        request_id="req/with odd:chars",
        artifact=ref(f"{root}/sha256/aa/{'a' * 64}.onnx", sha256="a" * 64, size_bytes=3),
        signature=Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])], outputs=[]),
        dataset="sklearn:iris",
        split_id="v1-x",
        arch="mlp",
        hyperparameters=Hyperparameters(),
    )
    assert completed.get(event.request_id) is None
    completed.put(event)
    assert CompletedRequests(root, s3=s3_options(settings)).get(event.request_id) == event  # another trainer
    assert completed.get("another") is None
    prefix = root.removeprefix(f"s3://{BUCKET}/")
    keys = [item["Key"] for item in seaweedfs.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith(f"{prefix}/trainer/completed/")  # one record, nothing temporary
