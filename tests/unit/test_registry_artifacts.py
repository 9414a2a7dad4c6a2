"""A model.trained event registers only the artifact store's own, intact copy of its digest.

The URI an event carries is never opened: anything else than the store's key for the digest is refused
(ArtifactRejected, which the consumer loop dead-letters with the reason), and so is a store copy that is
missing, tampered, of another size, or a link out of the store. Nothing is stored for a refused event.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from services.registry.adapters.memory import MemoryDatabase
from services.registry.domain import ArtifactRejected
from services.registry.handlers import handle_model_trained
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.errors import TransientError
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id, utc_now

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


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


def test_the_stores_own_key_registers_under_the_stores_uri(store: ArtifactStore) -> None:
    database = MemoryDatabase()
    uri, sha256, size = store.put_bytes(CONTENT)
    assert register(trained(uri, sha256, size), store, database) == 1
    second_uri, second_sha256, second_size = store.put_bytes(CONTENT * 2)
    assert register(trained(f"file://{second_uri}", second_sha256, second_size), store, database) == 2
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
    refused = {
        "a host file": (passwd, passwd_sha, passwd_size),
        "a file:// host file": (f"file://{passwd}", passwd_sha, passwd_size),
        "traversal": (f"{key_dir}/../../../../../../etc/passwd", passwd_sha, passwd_size),
        "traversal that lands on the key": (f"{key_dir}/../{sha256[:2]}/{sha256}.onnx", sha256, size),
        "http": (f"http://127.0.0.1:9/{sha256}.onnx", sha256, size),
        "s3": (f"s3://bucket/sha256/{sha256[:2]}/{sha256}.onnx", sha256, size),
        "relative": (f"sha256/{sha256[:2]}/{sha256}.onnx", sha256, size),
        "another digest's key": (store.uri("0" * 64), sha256, size),
    }
    database = MemoryDatabase()
    for case, (event_uri, digest, length) in refused.items():
        with pytest.raises(ArtifactRejected, match="is not the artifact store's key") as caught:
            register(trained(event_uri, digest, length), store, database)
        assert "root:" not in str(caught.value), case  # a reason never carries a file's content
    assert database.state.versions == {} and database.state.outbox == []


def test_a_store_copy_that_is_missing_tampered_resized_or_a_link_out_is_refused(store: ArtifactStore) -> None:
    database = MemoryDatabase()
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(ArtifactRejected, match="is not in the store"):
        register(trained(store.uri(missing), missing, 12), store, database)

    uri, sha256, size = store.put_bytes(CONTENT)
    with pytest.raises(ArtifactRejected, match="not the 999 stated"):
        register(trained(uri, sha256, 999), store, database)
    Path(uri).write_bytes(CONTENT[:-1] + b"!")  # tampered in place, same size
    with pytest.raises(ArtifactRejected, match="digest mismatch"):
        register(trained(uri, sha256, size), store, database)

    passwd, passwd_sha, passwd_size = host_file()
    link = store.uri(passwd_sha)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(passwd, link)  # the key itself is a link out of the store
    with pytest.raises(ArtifactRejected, match="outside the store") as caught:
        register(trained(link, passwd_sha, passwd_size), store, database)
    assert "root:" not in str(caught.value)
    assert database.state.versions == {} and database.state.outbox == []


def test_a_store_that_cannot_be_reached_is_transient(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, sha256, size = store.put_bytes(CONTENT)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("the store's server went away")

    monkeypatch.setattr(store, "verify", unreachable)
    with pytest.raises(TransientError, match="unreachable"):
        register(trained(uri, sha256, size), store, MemoryDatabase())
