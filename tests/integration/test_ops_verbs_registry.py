"""The day-to-day ``ferry`` verbs against the real registry app on the real PostgreSQL: list, versions,
history, promote / canary / rollback with the operator's token, and the refusals without one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_registry_support import API_TOKEN, trained_event

from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from services.registry.handlers import handle_model_trained
from shared import ops_cli
from shared.envelope import EventMeta
from shared.events import new_id, utc_now
from shared.ops_common import NO_TOKEN, Exit, operator_token
from shared.registry_client import RegistryClient, RetryBudget
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


class Kept(RegistryClient):
    """A client over the test's app that the verb may close without closing the app."""

    def close(self) -> None:
        pass


@pytest.fixture
def app(registry: Registry) -> Iterator[TestClient]:
    for number in range(3):
        event = trained_event("digits", store=registry.artifacts, content=f"model-{number}".encode() * 50)
        meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
        handle_model_trained(event, meta, uow=registry.uow(), artifacts=registry.artifacts)
    with TestClient(create_app(registry.settings, registry.api_deps())) as http:
        yield http


@pytest.fixture
def ferry(
    app: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    """``ferry(*argv) -> (exit code, stdout, stderr)``, the verbs' token found as the real command finds it."""
    monkeypatch.delenv("FERRY_REGISTRY_TOKENS_FILE", raising=False)
    monkeypatch.delenv("FERRY_API_TOKEN", raising=False)
    settings = FerrySettings(home=tmp_path)

    def connect(settings: FerrySettings, write: bool) -> RegistryClient:
        token = operator_token(settings) if write else None
        return Kept(app, token=token, budget=RetryBudget(attempts=2, total_s=10.0), sleep=lambda seconds: None)

    def run(*argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="ferry")
        commands = ops_cli.register(parser.add_subparsers(dest="command", required=True), connect=connect)
        args = parser.parse_args(argv)
        key = f"{args.command}.{args.action}" if getattr(args, "action", None) else args.command
        code = commands[key](args, settings)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run


def test_reads_list_versions_and_history(ferry) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = ferry("models", "--json")
    assert code == Exit.OK and [(m["name"], m["latest_version"]) for m in json.loads(out)] == [("digits", 3)]
    code, out, _ = ferry("versions", "digits")
    assert code == Exit.OK and all(f"v{n}" in out for n in (1, 2, 3)) and "registered" in out
    code, out, _ = ferry("models", "show", "digits")
    assert code == Exit.OK and "digits: never deployed" in out
    code, _, err = ferry("history", "ghost")
    assert code == Exit.NOT_FOUND and "not found" in err


def test_writes_without_a_token_are_refused_with_what_to_do(ferry, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    code, out, err = ferry("promote", "digits", "1")
    assert (code, out) == (Exit.FAILED, "") and err.strip() == f"ferry: {NO_TOKEN}"
    monkeypatch.setenv("FERRY_API_TOKEN", "not-the-registrys-token")
    code, _, err = ferry("canary", "digits", "0.5")
    assert code == Exit.FAILED and "refused the token (403): invalid token" in err
    code, out, _ = ferry("history", "digits", "--json")
    assert json.loads(out) == []  # nothing changed


def test_promote_canary_and_rollback_with_the_operators_token(ferry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api-tokens").write_text(f"operator {API_TOKEN}\n")  # as `make up` writes it
    assert ferry("promote", "digits", "1", "--reason", "first")[0] == Exit.OK
    code, out, _ = ferry("promote", "digits", "v2", "--canary", "10%")
    assert code == Exit.OK and "challenger v2 (canary 10%)" in out
    code, out, _ = ferry("canary", "digits", "0.5", "--json")
    assert code == Exit.OK and json.loads(out)["canary_weight"] == 0.5
    code, out, err = ferry("rollback", "digits", "--reason", "too slow")
    assert code == Exit.OK and "champion v1" in out and "challenger" not in out, err
    code, _, err = ferry("canary", "digits", "0.2")  # no challenger left to weigh
    assert code == Exit.FAILED and "refused (409)" in err

    code, out, _ = ferry("history", "digits", "--json")
    history = json.loads(out)
    assert [entry["action"] for entry in history] == ["rollback", "set_canary_weight", "promote", "promote"]
    assert history[0]["reason"] == "too slow" and history[2]["reason"] == "by hand: ferry promote"
    code, out, _ = ferry("history", "digits")
    assert code == Exit.OK and "too slow" in out and "v2 -> -" in out
