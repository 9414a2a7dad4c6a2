"""Test fixtures: one real Kafka broker and one real PostgreSQL for the whole session.

They are started by the same code as ``make up`` (shared.local.stack), on free ports, under
``.ferry-test/`` so that a running ``make up`` stack is left alone.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port

from shared.local.postgres import temporary_database
from shared.local.seaweedfs import SeaweedFS, weed_binary
from shared.local.stack import PROJECT_ROOT, Stack
from shared.settings import FerrySettings
from shared.topics import ensure_topics

TEST_ROOT = PROJECT_ROOT / ".ferry-test"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build SeaweedFS (minutes, once per machine) before the tests, outside every test's timeout."""
    if any(item.get_closest_marker("s3") for item in session.items):
        weed_binary()


@pytest.fixture(scope="session")
def no_leftovers() -> None:
    """Stop what the test sessions before this one left running when they were killed."""
    _stop_leftovers()


@pytest.fixture(scope="session")
def stack(no_leftovers: None) -> Iterator[Stack]:
    """The real broker and database, started once for the session and stopped after it."""
    home = TEST_ROOT / str(os.getpid())  # one folder per session: sessions may run side by side
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = FerrySettings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",
        topic_prefix="base.",
    )
    (home / "settings.json").write_text(settings.model_dump_json())
    running = Stack(settings)
    try:
        running.up()
        yield running
    finally:
        running.down()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs(no_leftovers: None) -> Iterator[SeaweedFS]:
    """A real S3-compatible store (SeaweedFS, built once into ~/.cache/ferry), on free ports, for the session."""
    home = TEST_ROOT / f"{os.getpid()}-s3"  # beside the session's stack folder, which its fixture wipes
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = FerrySettings(home=home, artifact_root="s3://ferry-test/artifacts")
    (home / "settings.json").write_text(settings.model_dump_json())
    store = SeaweedFS(settings)
    try:
        store.start()
        yield store
    finally:
        store.stop()
        shutil.rmtree(home, ignore_errors=True)


def _stop_leftovers() -> None:
    """Stop the stacks (and supervisors) of earlier sessions that were killed before their clean-up.

    A session keeps its state under ``.ferry-test/<session pid>/``, with a ``settings.json`` in each
    home that runs something (one level down for a whole ``ferry up`` system).
    """
    from shared.local.system import down

    for saved in [*TEST_ROOT.glob("*/settings.json"), *TEST_ROOT.glob("*/*/settings.json")]:
        session = saved.relative_to(TEST_ROOT).parts[0]
        owner = session.split("-")[0]  # "<pid>" or "<pid>-s3"
        session_pid = int(owner) if owner.isdigit() else None
        if not saved.exists() or (session_pid and _alive(session_pid)):
            continue
        down(FerrySettings.model_validate_json(saved.read_text()), say=lambda line: None)
        shutil.rmtree(TEST_ROOT / session, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def ferry_settings(stack: Stack, tmp_path: Path) -> FerrySettings:
    """Settings pointing at the session's stack, with a topic prefix of this test's own (topics created)."""
    settings = stack.settings.model_copy(
        update={
            "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
            "database_url": stack.database_url,
            "artifact_root": str(tmp_path / "artifacts"),
        }
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def fresh_database_url(stack: Stack) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL; dropped after the test."""
    with temporary_database(stack.database_url, prefix="test") as url:
        yield url


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """As the trainer service runs: one intra-op thread (a busy 2-core machine thrashes with more)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
