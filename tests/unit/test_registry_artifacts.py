"""A model.trained event registers only the artifact store's own, intact copy of its digest.

The URI an event carries is never opened: anything else than the store's key for the digest is refused
(ArtifactRejected, which the consumer loop dead-letters with the reason), and so is a store copy that is
missing, tampered, of another size, or a link out of the store. Nothing is stored for a refused event.

Each test runs on both backends: a local folder, and a real S3-compatible store (SeaweedFS, started once
per session by the ``seaweedfs`` fixture; that variant is marked integration).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.registry.adapters.memory import MemoryDatabase
from services.registry.domain import ArtifactRejected
from services.registry.handlers import handle_model_trained
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.errors import TransientError
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id, utc_now
from shared.local.ports import free_port
from shared.local.seaweedfs import SeaweedFS

SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
)
CONTENT = b"onnx-bytes" * 100


def trained(uri: str, sha256: str, size: int) -> ModelTrained:
    return ModelTrained(
        model_name="digits",
        request_id=new_id(),
        signature=SIGNATURE,
        dataset="sklearn:iris",
        split_id="s",
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        arch="mlp",
        hyperparameters=Hyperparameters(),
    )


def register(event: ModelTrained, store: ArtifactStore, database: MemoryDatabase) -> int | None:
    meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
    return handle_model_trained(event, meta, uow=database.uow(), artifacts=store).version


@dataclass
class Backend:
    """A store under test, and a way to change its copy of a digest behind its back."""

    kind: str
    store: ArtifactStore
    overwrite: Callable[[str, bytes], None]
    unreachable: Callable[[], ArtifactStore]


def folder_backend(root: Path) -> Backend:
    store = ArtifactStore(str(root / "store"))
    return Backend(
        "folder",
        store,
        lambda sha256, data: Path(store.uri(sha256)).write_bytes(data),
        lambda: ArtifactStore(str(root / "store")),
    )


def s3_backend(seaweedfs: SeaweedFS) -> Backend:
    root = f"s3://ferry-test/{uuid.uuid4().hex[:12]}"  # a prefix of this test's own
    store = ArtifactStore(root, s3=seaweedfs.options())
    client = seaweedfs.client()

    def overwrite(sha256: str, data: bytes) -> None:  # with the S3 API, not through the store
        client.put_object(Bucket="ferry-test", Key=store.uri(sha256).removeprefix("s3://ferry-test/"), Body=data)

    def unreachable() -> ArtifactStore:  # the same store's keys, at an endpoint where nothing listens
        return ArtifactStore(root, s3=seaweedfs.options(endpoint_url=f"http://127.0.0.1:{free_port()}"))

    return Backend("s3", store, overwrite, unreachable)


@pytest.fixture(params=["folder", pytest.param("s3", marks=[pytest.mark.integration, pytest.mark.s3])])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "s3":
        return s3_backend(request.getfixturevalue("seaweedfs"))
    return folder_backend(tmp_path)


@pytest.fixture
def store(backend: Backend) -> ArtifactStore:
    return backend.store


def test_the_stores_own_key_registers_under_the_stores_uri(store: ArtifactStore, backend: Backend) -> None:
    database = MemoryDatabase()
    uri, sha256, size = store.put_bytes(CONTENT)
    assert register(trained(uri, sha256, size), store, database) == 1
    second_uri, second_sha256, second_size = store.put_bytes(CONTENT * 2)
    spelled = f"file://{second_uri}" if backend.kind == "folder" else second_uri  # a folder's key, either way
    assert register(trained(spelled, second_sha256, second_size), store, database) == 2
    recorded = [version.artifact_uri for version in database.state.versions.values()]
    assert recorded == [store.uri(sha256), store.uri(hashlib.sha256(CONTENT * 2).hexdigest())]  # canonical


def host_file() -> tuple[str, str, int]:
    """A real file outside the store, with its real digest and size (the issue's /etc/passwd reproduction)."""
    content = Path("/etc/passwd").read_bytes()
    return "/etc/passwd", hashlib.sha256(content).hexdigest(), len(content)


def test_uris_that_are_not_the_stores_key_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    uri, sha256, size = store.put_bytes(CONTENT)  # even when the store does hold the digest
    passwd, passwd_sha, passwd_size = host_file()
    key_dir = os.path.dirname(uri)
    tail = uri.removeprefix(store.root)  # /sha256/<ab>/<digest>.onnx
    refused = {
        "a host file": (passwd, passwd_sha, passwd_size),
        "a file:// host file": (f"file://{passwd}", passwd_sha, passwd_size),
        "traversal": (f"{key_dir}/../../../../../../etc/passwd", passwd_sha, passwd_size),
        "traversal that lands on the key": (f"{key_dir}/../{sha256[:2]}/{sha256}.onnx", sha256, size),
        "http": (f"http://127.0.0.1:9/{sha256}.onnx", sha256, size),
        "s3": (f"s3://bucket/sha256/{sha256[:2]}/{sha256}.onnx", sha256, size),
        "another bucket": (f"s3://other-bucket/{store.root.split('/', 3)[-1]}{tail}", sha256, size),
        "another root beside it": (f"{store.root}-other{tail}", sha256, size),
        "the root's parent": (f"{store.root.rsplit('/', 1)[0]}{tail}", sha256, size),
        "no sha256 folder": (f"{store.root}/{sha256[:2]}/{sha256}.onnx", sha256, size),
        "relative": (f"sha256/{sha256[:2]}/{sha256}.onnx", sha256, size),
        "another digest's key": (store.uri("0" * 64), sha256, size),
    }
    database = MemoryDatabase()
    for case, (event_uri, digest, length) in refused.items():
        with pytest.raises(ArtifactRejected, match="is not the artifact store's key") as caught:
            register(trained(event_uri, digest, length), store, database)
        assert "root:" not in str(caught.value), case  # a reason never carries a file's content
    assert database.state.versions == {} and database.state.outbox == []


def test_a_store_copy_that_is_missing_tampered_or_resized_is_refused(store: ArtifactStore, backend: Backend) -> None:
    database = MemoryDatabase()
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(ArtifactRejected, match="is not in the store"):
        register(trained(store.uri(missing), missing, 12), store, database)

    uri, sha256, size = store.put_bytes(CONTENT)
    with pytest.raises(ArtifactRejected, match="not the 999 stated"):
        register(trained(uri, sha256, 999), store, database)
    backend.overwrite(sha256, CONTENT[:-1] + b"!")  # tampered in place, same size
    with pytest.raises(ArtifactRejected, match="digest mismatch"):
        register(trained(uri, sha256, size), store, database)
    assert database.state.versions == {} and database.state.outbox == []


def test_a_folder_key_that_is_a_link_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store, database = ArtifactStore(str(tmp_path / "store")), MemoryDatabase()
    passwd, passwd_sha, passwd_size = host_file()
    link = store.uri(passwd_sha)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(passwd, link)  # the key itself is a link out of the store
    with pytest.raises(ArtifactRejected, match="outside the store") as caught:
        register(trained(link, passwd_sha, passwd_size), store, database)
    assert "root:" not in str(caught.value)
    assert database.state.versions == {} and database.state.outbox == []


def test_a_store_that_cannot_be_reached_is_transient(backend: Backend) -> None:
    uri, sha256, size = backend.store.put_bytes(CONTENT)
    away = backend.unreachable()
    if backend.kind == "s3":  # a real refused connection, as the consumer loop meets it
        with pytest.raises(TransientError, match="unreachable"):
            register(trained(uri, sha256, size), away, MemoryDatabase())
        with pytest.raises(TransientError, match="unreachable"):
            away.put_bytes(CONTENT * 3)
        return
    with pytest.raises(TransientError, match="unreachable"):
        register(trained(uri, sha256, size), _verify_fails(away), MemoryDatabase())


def _verify_fails(store: ArtifactStore) -> ArtifactStore:
    """A folder store whose filesystem went away (a network mount that stopped answering)."""

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("the store's server went away")

    store.verify = unreachable  # type: ignore[method-assign]
    return store
