"""End to end: real registry and trainer processes on the real stack; a user runs `ferry train --wait`.

This is the trainer issue's "done when": the request is followed with progress, the version appears
in the registry with its metrics, and its artifact downloads intact and serves the held-out split.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from e2e_support import Processes, ferry

from shared.datasets import load_dataset, split
from shared.onnx import open_session, predict

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = secrets.token_urlsafe(24)  # the registry refuses a placeholder token at start-up


@pytest.fixture
def loop_env(user_env: dict[str, str], request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a user would export, with the registry's API token (and an s3:// store when asked)."""
    env = {**user_env, "FERRY_API_TOKEN": TOKEN}
    if getattr(request, "param", "folder") == "s3":  # the session's SeaweedFS, a prefix of this test's own
        seaweedfs = request.getfixturevalue("seaweedfs")
        env |= seaweedfs.environment() | {"FERRY_ARTIFACT_ROOT": f"s3://ferry-test/{uuid.uuid4().hex[:12]}"}
    return env


@pytest.fixture
def services(loop_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The registry and one trainer, as processes; yields the registry's URL."""
    processes = Processes(loop_env, tmp_path)
    for name in ("registry", "trainer"):
        processes.start(name)
    registry = loop_env["FERRY_REGISTRY_URL"]
    try:
        processes.wait_ready("registry", timeout_s=60)
        yield registry
    finally:
        processes.stop()


@pytest.mark.parametrize("loop_env", ["folder", pytest.param("s3", marks=pytest.mark.s3)], indirect=True)
def test_ferry_train_wait_ends_with_a_registered_served_quality_version(
    loop_env: dict[str, str], services: str
) -> None:
    result = ferry(
        loop_env, "train", "--model", "digits", "--dataset", "sklearn:digits", "--epochs", "40", "--wait-registered"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registered digits version 1" in result.stdout + result.stderr

    version = httpx.get(f"{services}/api/v1/models/digits/versions/1").json()
    assert version["status"] == "registered"
    assert version["metrics"]["val_accuracy"] >= 0.95
    assert version["dataset"] == "sklearn:digits"
    assert version["artifact"]["uri"].startswith(loop_env["FERRY_ARTIFACT_ROOT"] + "/sha256/")  # in the store asked for

    artifact = httpx.get(f"{services}/api/v1/models/digits/versions/1/artifact")
    assert artifact.status_code == 200
    digest = hashlib.sha256(artifact.content).hexdigest()
    assert digest == version["artifact"]["sha256"] == artifact.headers["etag"].strip('"')

    # The artifact takes raw features (standardization is in the graph) and generalises to the test split.
    held_out = split(load_dataset("sklearn:digits")).test
    probabilities = predict(open_session(artifact.content), held_out.features)
    assert float(np.mean(probabilities.argmax(axis=1) == held_out.labels)) >= 0.95


def test_a_bad_request_fails_with_its_reason_and_the_trainer_keeps_going(
    loop_env: dict[str, str], services: str
) -> None:
    bad = ferry(loop_env, "train", "--model", "ghost", "--dataset", "sklearn:no-such-thing", "--wait-registered")
    assert bad.returncode != 0
    assert "unknown dataset" in bad.stdout + bad.stderr

    good = ferry(
        loop_env, "train", "--model", "iris", "--dataset", "sklearn:iris", "--epochs", "30", "--wait-registered"
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert httpx.get(f"{services}/api/v1/models/iris/versions/1").status_code == 200
    assert httpx.get(f"{services}/api/v1/models/ghost").status_code == 404
