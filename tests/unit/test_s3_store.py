"""The s3:// store root and its key pair: parsed strictly, never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.artifacts import ArtifactStore
from shared.local.seaweedfs import ensure_credentials, wants_local_s3
from shared.s3 import S3Options, S3UriError, split_root
from shared.settings import FerrySettings


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("s3://models", ("models", "")),
        ("s3://models/", ("models", "")),
        ("s3://my.models-1/ferry/prod", ("my.models-1", "ferry/prod")),
    ],
)
def test_a_store_root_is_a_bucket_and_a_prefix(root: str, expected: tuple[str, str]) -> None:
    assert split_root(root) == expected


@pytest.mark.parametrize(
    "root",
    [
        "s3://AKIAEXAMPLE:hunter2secret@models/ferry",
        "s3://",
        "s3://Models",
        "s3://models/a//b",
        "s3://models/a/../b",
        "s3://models/./b",
        "http://models/a",
    ],
)
def test_a_root_that_is_not_bucket_and_prefix_is_refused_without_echoing_it(root: str) -> None:
    with pytest.raises(S3UriError) as caught:
        ArtifactStore(root) if root.startswith("s3://") else split_root(root)
    assert "hunter2" not in str(caught.value) and "AKIA" not in str(caught.value)


def test_a_key_pair_is_never_shown() -> None:
    options = S3Options(endpoint_url="http://127.0.0.1:1", access_key_id="AKIAEXAMPLE", secret_access_key="hunter2")
    assert "hunter2" not in repr(options) and "AKIAEXAMPLE" not in repr(options)


def test_the_local_key_pair_is_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "s3-credentials"
    first = ensure_credentials(path)
    assert ensure_credentials(path) == first and len(first.secret_access_key) >= 30
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.secret_access_key not in repr(first)


def test_the_local_stack_serves_s3_only_without_an_endpoint_of_the_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    assert not wants_local_s3(FerrySettings(home=tmp_path))
    assert wants_local_s3(FerrySettings(home=tmp_path, artifact_root="s3://models/ferry"))
    theirs = FerrySettings(home=tmp_path, artifact_root="s3://models/ferry", s3_endpoint_url="https://s3.example")
    assert not wants_local_s3(theirs)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example")
    assert not wants_local_s3(FerrySettings(home=tmp_path, artifact_root="s3://models/ferry"))
