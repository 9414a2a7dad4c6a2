"""The one registry client against the real registry app on the real PostgreSQL: pages, typed refusals,
writes with and without a token, verified artifacts, and the services' readings of the registry over it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from itertools import islice

import pytest
from fastapi.testclient import TestClient
from test_registry_support import API_TOKEN, trained_event

from services.evaluator.adapters.registry import RegistryRecords
from services.gateway.adapters.registry import RegistryDeployments
from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from services.registry.handlers import handle_model_decided, handle_model_trained
from shared.artifacts import SizeMismatch
from shared.envelope import EventMeta
from shared.events import ModelDecided, ModelTrained, new_id, utc_now
from shared.registry_client import RegistryClient, RetryBudget
from shared.registry_errors import RegistryConflict, RegistryNotFound, RegistryRefused, RegistryUnauthorized

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]
ALICE = secrets.token_urlsafe(20)
BUDGET = RetryBudget(attempts=2, total_s=10.0)


def meta(event: ModelTrained | ModelDecided) -> EventMeta:
    return EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)


def register(registry: Registry, model: str, content: bytes) -> ModelTrained:
    event = trained_event(model, store=registry.artifacts, content=content)
    handle_model_trained(event, meta(event), uow=registry.uow(), artifacts=registry.artifacts)
    return event


@pytest.fixture
def app(registry: Registry) -> Iterator[TestClient]:
    """The registry's app with two writers: admin (FERRY_API_TOKEN) and alice."""
    deps = registry.api_deps()
    deps.tokens = {**deps.tokens, ALICE: "alice"}
    with TestClient(create_app(registry.settings, deps)) as http:
        yield http


def client(http: TestClient, token: str | None = None) -> RegistryClient:
    return RegistryClient(http, token=token, budget=BUDGET, sleep=lambda seconds: None)


@pytest.fixture
def stored(registry: Registry) -> list[ModelTrained]:
    """Five versions of ``digits`` and one of each of ``m1`` … ``m4``, their artifacts in the store."""
    events = [register(registry, "digits", f"model-{n}".encode() * 100) for n in range(5)]
    return events + [register(registry, f"m{n}", f"other-{n}".encode() * 10) for n in range(1, 5)]


def test_the_pager_reads_every_page_of_models_versions_and_history(app: TestClient, stored: list[ModelTrained]) -> None:
    reader, writer = client(app), client(app, API_TOKEN)
    assert [model.name for model in reader.models(page_size=2)] == ["digits", "m1", "m2", "m3", "m4"]
    versions = list(reader.versions("digits", page_size=2))
    assert [version.version for version in versions] == [5, 4, 3, 2, 1]
    assert versions[-1].artifact.sha256 == stored[0].artifact.sha256 and versions[0].status == "registered"
    for number in (1, 2, 3, 4, 5):
        writer.promote("digits", number, reason=f"v{number} by hand")
    history = list(reader.history("digits", page_size=2))
    assert [(entry.revision, entry.to_champion) for entry in history] == [(5, 5), (4, 4), (3, 3), (2, 2), (1, 1)]
    assert [version.version for version in reader.versions("digits", status="archived", page_size=1)] == [4, 3, 2, 1]
    assert [v.version for v in islice(reader.versions("digits", page_size=1), 2)] == [5, 4]  # a page at a time


def test_an_unknown_model_or_version_is_a_typed_not_found_with_the_registrys_message(
    app: TestClient, stored: list[ModelTrained]
) -> None:
    reader = client(app)
    with pytest.raises(RegistryNotFound) as unknown:
        reader.model("nope")
    assert unknown.value.status == 404 and unknown.value.message == "model 'nope' is not registered"
    with pytest.raises(RegistryNotFound, match="model 'digits' has no version 7"):
        reader.version("digits", 7)
    with pytest.raises(RegistryNotFound):
        list(reader.history("nope"))


def test_writes_without_a_token_or_with_a_wrong_one_are_refused_by_name(
    app: TestClient, registry: Registry, stored: list[ModelTrained]
) -> None:
    with pytest.raises(RegistryUnauthorized) as missing:
        client(app).promote("digits", 1, reason="no token")
    assert missing.value.status == 401 and missing.value.message == "a bearer token is required"
    with pytest.raises(RegistryUnauthorized) as wrong:
        client(app, "not-a-token").promote("digits", 1, reason="wrong token")
    assert wrong.value.status == 403 and wrong.value.message == "invalid token"
    closed = registry.api_deps()
    closed.tokens = {}
    with TestClient(create_app(registry.settings, closed)) as http, pytest.raises(RegistryUnauthorized) as disabled:
        client(http, API_TOKEN).promote("digits", 1, reason="writes are off")
    assert "writes are disabled" in disabled.value.message
    assert client(app).deployment("digits").revision == 0  # nothing changed


def test_writes_with_a_token_promote_weigh_and_roll_back(app: TestClient, stored: list[ModelTrained]) -> None:
    alice, admin = client(app, ALICE), client(app, API_TOKEN)
    with pytest.raises(RegistryConflict, match="cannot rollback"):
        admin.rollback("digits", reason="too early")
    first = alice.promote("digits", 1, reason="first")
    assert (first.champion, first.revision, first.changed) == (1, 1, True)
    assert not alice.promote("digits", 1, reason="first again").changed
    canary = alice.promote("digits", 2, canary_weight=0.1, reason="try v2")
    assert (canary.champion, canary.challenger, canary.canary_weight) == (1, 2, 0.1)
    assert admin.set_canary_weight("digits", 0.4, reason="more").canary_weight == 0.4
    rolled = admin.rollback("digits", version=2, reason="v2 hurts")
    assert (rolled.champion, rolled.challenger) == (1, None)
    newest = next(admin.history("digits"))
    assert (newest.action, newest.actor, newest.reason) == ("rollback", "user:admin", "v2 hurts")
    assert admin.version("digits", 2).status == "rolled_back"


def test_a_rejected_version_needs_force_and_the_history_says_so(
    app: TestClient, registry: Registry, stored: list[ModelTrained]
) -> None:
    rejection = ModelDecided(model_name="digits", version=2, decision="reject", reason="worse than nothing")
    handle_model_decided(rejection, meta(rejection), uow=registry.uow())
    alice = client(app, ALICE)
    with pytest.raises(RegistryConflict) as refused:
        alice.promote("digits", 2, stage="champion", reason="the test set was stale")
    assert refused.value.status == 409 and "promoting it needs force" in refused.value.message
    assert alice.promote("digits", 2, stage="champion", reason="the test set was stale", force=True).champion == 2
    [entry] = alice.history("digits")
    assert (entry.forced, entry.actor) == (True, "user:alice")
    [evaluation] = alice.evaluations("digits", 2)
    assert (evaluation.decision, evaluation.reason) == ("reject", "worse than nothing")
    lineage = alice.lineage("digits", 2)
    assert lineage.training.request_id == stored[1].request_id and [d.revision for d in lineage.deployments] == [1]


def test_an_artifact_comes_back_verified(app: TestClient, stored: list[ModelTrained]) -> None:
    reader = client(app)
    assert reader.artifact("digits", 1) == b"model-0" * 100
    claimed = stored[0].artifact.model_copy(update={"size_bytes": 699})
    with pytest.raises(SizeMismatch):
        reader.artifact("digits", 1, expected=claimed)
    with pytest.raises(RegistryRefused):
        reader.artifact("digits", 99)


def test_the_gateway_and_the_evaluator_read_the_registry_through_the_client(
    app: TestClient, stored: list[ModelTrained]
) -> None:
    client(app, API_TOKEN).promote("digits", 3, reason="serve v3")
    [deployment] = RegistryDeployments(client(app)).deployments()
    assert deployment.champion is not None and deployment.challenger is None
    assert (deployment.model_name, deployment.revision, deployment.champion.version) == ("digits", 1, 3)
    assert deployment.champion.sha256 == stored[2].artifact.sha256
    assert deployment.champion.size_bytes == stored[2].artifact.size_bytes
    records = RegistryRecords(client(app))
    assert records.model_names() == ["digits", "m1", "m2", "m3", "m4"]
    version = records.version("digits", 3)
    assert version is not None and version.status == "champion" and version.dataset == "sklearn:digits"
    assert records.version("digits", 42) is None and records.deployment("ghost") is None
    assert [entry.to_champion for entry in records.history("digits")] == [3]
    assert records.evaluations("ghost", 1) == []


def test_the_gateway_finds_a_pinned_version_unless_the_registry_archived_it(
    app: TestClient, stored: list[ModelTrained]
) -> None:
    deployments = RegistryDeployments(client(app))
    found = deployments.version_spec("digits", 3)
    assert found is not None and (found.version, found.sha256) == (3, stored[2].artifact.sha256)
    assert deployments.version_spec("digits", 42) is None and deployments.version_spec("ghost", 1) is None
    client(app, API_TOKEN).archive_version("digits", 3, reason="retired")
    assert deployments.version_spec("digits", 3) is None
