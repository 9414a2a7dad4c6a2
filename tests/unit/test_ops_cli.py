"""The day-to-day ``ferry`` verbs over a fake registry client: parsers, tables, JSON and exit codes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import ops_cli
from shared.cli import build_parser
from shared.events import ArtifactRef, RetrainCause, Signature
from shared.ops_common import NO_TOKEN, CommandError, Exit, operator_token
from shared.registry_errors import RegistryConflict, RegistryNotFound, RegistryUnauthorized, RegistryUnavailable
from shared.registry_models import DeploymentChangeOut, DeploymentOut, HistoryEntryOut, ModelOut, VersionOut
from shared.settings import FerrySettings

NOW = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)


def version(number: int, status: str = "registered") -> VersionOut:
    return VersionOut(
        model_name="digits",
        version=number,
        status=status,  # type: ignore[arg-type]
        artifact=ArtifactRef(uri="/x", sha256=f"{number}" * 64, size_bytes=1, format="onnx"),
        signature=Signature(inputs=[], outputs=[]),
        metrics={"val_accuracy": 0.9 + number / 100},
        dataset="sklearn:digits",
        split_id="v1",
        arch="mlp",
        hyperparameters={},
        compression={},
        timings={},
        training_request_id=None,
        parent_model=None,
        parent_version=None,
        source_event_id=None,
        tags={},
        created_at=NOW,
        updated_at=NOW,
    )


class FakeRegistry:
    """The registry client's reads and writes over a dict; ``refuse`` makes the next write fail."""

    def __init__(self) -> None:
        self.deployed = DeploymentOut(
            model_name="digits",
            champion=1,
            challenger=None,
            canary_weight=0.0,
            shadow=False,
            revision=1,
            updated_at=NOW,
        )
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.refuse: Exception | None = None
        self.closed = False
        self.listed = [version(2, "rejected"), version(1, "champion")]

    def _known(self, name: str) -> None:
        if name != "digits":
            raise RegistryNotFound(404, f"no model {name!r}")

    def models(self) -> Iterator[ModelOut]:
        yield ModelOut(
            name="digits", description="", tags={}, latest_version=2, champion=1, challenger=None,
            created_at=NOW, updated_at=NOW,
        )  # fmt: skip

    def model(self, name: str) -> ModelOut:
        self._known(name)
        return next(self.models())

    def versions(self, name: str) -> Iterator[VersionOut]:
        self._known(name)
        yield from self.listed

    def deployment(self, name: str) -> DeploymentOut:
        self._known(name)
        return self.deployed

    def history(self, name: str) -> Iterator[HistoryEntryOut]:
        self._known(name)
        yield HistoryEntryOut(
            revision=1, action="promote", from_champion=None, to_champion=1, from_challenger=None, to_challenger=None,
            from_canary_weight=0.0, to_canary_weight=0.0, shadow=False, actor="evaluator", reason="first version",
            source_event_id=None, created_at=NOW, forced=False,
        )  # fmt: skip

    def _write(self, what: str, **fields: Any) -> DeploymentChangeOut:
        self._known(fields["name"])
        if self.refuse:
            raise self.refuse
        self.writes.append((what, fields))
        return DeploymentChangeOut(**{**self.deployed.model_dump(), "revision": 2, "changed": True})

    def promote(self, name: str, version: int, **options: Any) -> DeploymentChangeOut:
        return self._write("promote", name=name, version=version, **options)

    def set_canary_weight(self, name: str, weight: float, **options: Any) -> DeploymentChangeOut:
        return self._write("canary", name=name, weight=weight, **options)

    def rollback(self, name: str, **options: Any) -> DeploymentChangeOut:
        return self._write("rollback", name=name, **options)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


def ferry(fake: FakeRegistry, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = ops_cli.register(sub, connect=lambda settings, write: fake)  # type: ignore[arg-type,return-value]
    args = parser.parse_args(argv)
    key = f"{args.command}.{args.action}" if getattr(args, "action", None) else args.command
    return commands[key](args, FerrySettings())


def test_models_print_a_table_and_json(fake: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(fake, "models") == Exit.OK
    table = capsys.readouterr().out
    assert "digits" in table and "champion" in table and "v1" in table
    assert ferry(fake, "models", "--json") == Exit.OK
    assert json.loads(capsys.readouterr().out)[0]["name"] == "digits"
    assert fake.closed


def test_models_show_gives_the_deployment_and_the_latest_versions(
    fake: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ferry(fake, "models", "show", "digits") == Exit.OK
    shown = capsys.readouterr().out
    assert "digits: champion v1 (revision 1)" in shown and "rejected" in shown
    assert ferry(fake, "models", "show", "digits", "--json") == Exit.OK
    record = json.loads(capsys.readouterr().out)
    assert record["deployment"]["champion"] == 1 and [v["version"] for v in record["latest_versions"]] == [2, 1]


def test_versions_and_history(fake: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(fake, "versions", "digits", "--json") == Exit.OK
    assert [v["status"] for v in json.loads(capsys.readouterr().out)] == ["rejected", "champion"]
    assert ferry(fake, "history", "digits") == Exit.OK
    history = capsys.readouterr().out
    assert "- -> v1" in history and "evaluator" in history and "first version" in history


def test_versions_show_the_validation_metrics_of_each_versions_task(
    fake: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    regressor = version(3).model_copy(
        update={
            "signature": Signature(inputs=[], outputs=[], task="regression"),
            "metrics": {"val_rmse": 51.37846, "val_mae": 42.47, "val_r2": 0.57814, "val_loss": 0.45},
        }
    )
    upload = version(4).model_copy(update={"metrics": {"accuracy": 0.97}})  # an upload's metrics are its own
    fake.listed = [upload, regressor, version(1, "champion")]
    assert ferry(fake, "versions", "digits") == Exit.OK
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("│ v")}
    assert "RMSE 51.3785 · R² 0.5781" in lines["v3"] and "accuracy" not in lines["v3"]
    assert "accuracy 0.9100" in lines["v1"] and "RMSE" not in lines["v1"]
    assert "│ -" in lines["v4"] and "0.97" not in lines["v4"]
    assert [row[2] for row in ops_cli.versions_rows(fake.listed)] == [
        None,
        "RMSE 51.3785 · R² 0.5781",
        "accuracy 0.9100",
    ]


def test_a_retrained_version_names_the_alert_that_asked_for_it(
    fake: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    cause = RetrainCause(
        alert_id="alert-7",
        rule="InputDrift",
        version=1,
        fired_at=NOW,
        champion_version=1,
        original_dataset="sklearn:digits",
        window="production/digits-alert-7.csv",
        window_rows=300,
    )
    fake.listed = [version(2).model_copy(update={"cause": cause}), version(1, "champion")]
    assert ferry(fake, "versions", "digits") == Exit.OK
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("│ v")}
    assert "alert InputDrift on v1 (id alert-7), +300 production rows" in lines["v2"].replace("│", "")
    assert "InputDrift" not in lines["v1"]
    assert [row[-1] for row in ops_cli.versions_rows(fake.listed)] == [
        "alert InputDrift on v1 (id alert-7), +300 production rows",
        None,
    ]


def test_an_unknown_model_exits_3_and_says_so(fake: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(fake, "versions", "nope") == Exit.NOT_FOUND
    assert "not found: no model 'nope'" in capsys.readouterr().err


def test_a_name_no_model_can_have_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    client = ops_cli.RegistryClient(httpx.Client(base_url="http://127.0.0.1:9"))
    code = ferry(client, "versions", "../etc")  # type: ignore[arg-type]
    assert code == Exit.USAGE and "is not a model name" in capsys.readouterr().err


def test_writes_send_what_was_asked(fake: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(fake, "promote", "digits", "v2", "--canary", "10%") == Exit.OK
    assert ferry(fake, "canary", "digits", "0.5", "--reason", "more traffic") == Exit.OK
    assert ferry(fake, "rollback", "digits") == Exit.OK
    assert ferry(fake, "promote", "digits", "2", "--force", "--reason", "audited by hand") == Exit.OK
    assert fake.writes == [
        ("promote", {"name": "digits", "version": 2, "reason": "by hand: ferry promote", "stage": "canary",
                     "canary_weight": 0.1, "force": False}),
        ("canary", {"name": "digits", "weight": 0.5, "reason": "more traffic"}),
        ("rollback", {"name": "digits", "reason": "by hand: ferry rollback", "version": None}),
        ("promote", {"name": "digits", "version": 2, "reason": "audited by hand", "stage": "champion",
                     "canary_weight": None, "force": True}),
    ]  # fmt: skip
    assert "revision 2" in capsys.readouterr().out


def test_force_without_a_reason_is_a_usage_error(fake: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert ferry(fake, "promote", "digits", "2", "--force") == Exit.USAGE
    assert "--force needs --reason" in capsys.readouterr().err and not fake.writes


@pytest.mark.parametrize(
    ("refusal", "code", "said"),
    [
        (RegistryUnauthorized(401, "a bearer token is required"), Exit.FAILED, "refused the token (401)"),
        (RegistryConflict(409, "version 2 was rejected; force it"), Exit.FAILED, "refused (409): version 2 was"),
        (RegistryUnavailable("connection refused"), Exit.UNREACHABLE, "connection refused; is the registry up?"),
    ],
)
def test_refusals_and_outages_have_their_exit_codes(
    fake: FakeRegistry, capsys: pytest.CaptureFixture[str], refusal: Exception, code: Exit, said: str
) -> None:
    fake.refuse = refusal
    assert ferry(fake, "promote", "digits", "2") == code
    assert said in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [("canary", "digits", "1.5"), ("canary", "digits", "ten"), ("promote", "digits", "0"), ("promote", "digits", "x")],
)
def test_bad_arguments_exit_2(fake: FakeRegistry, argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exited:
        ferry(fake, *argv)
    assert exited.value.code == 2


def test_the_token_comes_from_the_environment_or_the_tokens_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FERRY_REGISTRY_TOKENS_FILE", raising=False)
    monkeypatch.setenv("FERRY_API_TOKEN", "from-the-environment")
    settings = FerrySettings(home=tmp_path)
    assert operator_token(settings) == "from-the-environment"
    monkeypatch.delenv("FERRY_API_TOKEN")
    with pytest.raises(CommandError) as missing:
        operator_token(settings)
    assert missing.value.code == Exit.FAILED and missing.value.message == NO_TOKEN
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api-tokens").write_text("alice a-token\noperator the-operators-token\n")
    assert operator_token(settings) == "the-operators-token"


def test_every_verb_has_help_and_is_registered_in_ferry() -> None:
    parser, commands = build_parser()
    for key in ("models", "models.show", "versions", "history", "promote", "rollback", "canary"):
        assert key in commands
    for key in ("predict", "alerts", "logs", "completion"):
        assert key in commands
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["promote", "--help"])
    assert exited.value.code == 0
