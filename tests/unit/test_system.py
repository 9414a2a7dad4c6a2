"""The pieces of `make up` that need no process: waiting, the token file, the supervisor's config, status."""

from __future__ import annotations

import configparser
import stat
import sys
import time
from pathlib import Path

import pytest

from shared.credentials import parse_tokens_file
from shared.local.supervisor import Supervisor, SupervisorError, SupervisorSettings, settings_digest
from shared.local.system import Part, render, service_environment, settings_environment
from shared.local.tokens import (
    TOKENS_FILE_ENV,
    WEBHOOK_TOKENS_FILE_ENV,
    TokenError,
    alertmanager_credentials_file,
    ensure_tokens_file,
    ensure_webhook_tokens_file,
    operator_token,
    read_tokens,
)
from shared.services import installed_services
from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        TOKENS_FILE_ENV,
        WEBHOOK_TOKENS_FILE_ENV,
        "FERRY_API_TOKEN",
        "FERRY_REGISTRY_URL",
        "FERRY_REGISTRY_PORT",
        "FERRY_DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_wait_for_returns_the_first_truthy_answer() -> None:
    answers = iter([None, False, 0, "ready"])
    assert wait_for(lambda: next(answers), what="x", timeout_s=10, first_s=0.001, max_s=0.01, jitter_s=0) == "ready"


def test_wait_for_gives_up_with_not_ready_at_its_deadline() -> None:
    calls: list[float] = []
    started = time.monotonic()
    with pytest.raises(NotReady, match="the thing was not ready after 0s"):
        wait_for(lambda: calls.append(time.monotonic()), what="the thing", timeout_s=0.3, first_s=0.01, max_s=0.05)
    assert len(calls) >= 2  # it did retry, and it stopped
    assert time.monotonic() - started < 10


def test_a_probe_that_raises_is_not_retried() -> None:
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        raise RuntimeError("the process died")

    with pytest.raises(RuntimeError, match="died"):
        wait_for(probe, what="x", timeout_s=10)
    assert calls == [1]


def test_the_token_file_is_generated_once_private_and_random(tmp_path: Path) -> None:
    settings = FerrySettings(home=tmp_path / "home")
    first = ensure_tokens_file(settings)
    assert first.created and first.path == (tmp_path / "home" / "secrets" / "api-tokens").absolute()
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.path.parent.stat().st_mode) == 0o700
    [line] = first.path.read_text().splitlines()
    user, token = line.split(" ")
    assert user == "operator" and len(token) >= 40 and token != "ferry-demo-token"
    again = ensure_tokens_file(settings)
    assert not again.created and operator_token(again.path) == token  # kept, not regenerated
    other = ensure_tokens_file(FerrySettings(home=tmp_path / "other"))
    assert operator_token(other.path) != token


def test_a_tokens_file_of_the_users_own_is_used_and_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "tokens"
    monkeypatch.setenv(TOKENS_FILE_ENV, str(mine))
    with pytest.raises(TokenError, match="names no file"):
        ensure_tokens_file(FerrySettings(home=tmp_path / "home"))
    mine.write_text("# ops\nalice tok-a\n\noperator tok-o\n")
    assert ensure_tokens_file(FerrySettings(home=tmp_path / "home")).path == mine
    assert read_tokens(mine) == {"alice": "tok-a", "operator": "tok-o"}
    assert operator_token(mine) == "tok-o"
    mine.write_text("alice tok-a extra\n")
    with pytest.raises(TokenError, match="line 1: expected '<user> <token>'"):
        read_tokens(mine)


def test_the_webhook_tokens_are_generated_once_a_sender_apiece_with_alertmanagers_alone_beside(
    tmp_path: Path,
) -> None:
    settings = FerrySettings(home=tmp_path / "home")
    first = ensure_webhook_tokens_file(settings)
    assert first.created and first.path == (tmp_path / "home" / "secrets" / "webhook-tokens").absolute()
    tokens = read_tokens(first.path)
    assert set(tokens) == {"alertmanager", "grafana"} and tokens["alertmanager"] != tokens["grafana"]
    assert parse_tokens_file(first.path, setting=WEBHOOK_TOKENS_FILE_ENV)  # the monitor takes them
    credentials = alertmanager_credentials_file(settings)
    assert credentials.read_text() == f"{tokens['alertmanager']}\n"  # Alertmanager's credentials_file
    for path in (first.path, credentials):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not ensure_webhook_tokens_file(settings).created and read_tokens(first.path) == tokens
    first.path.unlink()  # a tokens file made anew: Alertmanager's file follows it
    renewed = read_tokens(ensure_webhook_tokens_file(settings).path)
    assert renewed != tokens and credentials.read_text() == f"{renewed['alertmanager']}\n"


def test_a_webhook_tokens_file_of_the_users_own_is_used_and_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "webhook-tokens"
    monkeypatch.setenv(WEBHOOK_TOKENS_FILE_ENV, str(mine))
    with pytest.raises(TokenError, match="names no file"):
        ensure_webhook_tokens_file(FerrySettings(home=tmp_path / "home"))
    mine.write_text("alertmanager Xk29vLq8TzR4mWp7Yc3n\n")
    assert ensure_webhook_tokens_file(FerrySettings(home=tmp_path / "home")).path == mine
    assert not alertmanager_credentials_file(FerrySettings(home=tmp_path / "home")).exists()


def _config(supervisor: Supervisor, workdir: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(supervisor.render_config(workdir))
    return parser


def test_the_config_runs_every_installed_service_with_restarts_and_back_off(tmp_path: Path) -> None:
    supervisor = Supervisor(FerrySettings(home=tmp_path / "h%me"), SupervisorSettings(start_retries=7))
    config = _config(supervisor, tmp_path)
    programs = [section.split(":", 1)[1] for section in config.sections() if section.startswith("program:")]
    assert programs == [spec.name for spec in installed_services()]
    assert {"registry", "trainer"} <= set(programs)
    registry = config["program:registry"]
    assert registry["command"] == f"{sys.executable} -m services.registry"
    assert registry["autorestart"] == "true" and registry["startretries"] == "7"
    assert registry["stopasgroup"] == registry["killasgroup"] == "true"
    assert registry["stdout_logfile"] == str((tmp_path / "h%%me" / "logs" / "registry.log").absolute())
    assert config["unix_http_server"]["chmod"] == "0700"
    assert config["supervisord"]["pidfile"].endswith("supervisor/supervisord.pid")


def test_the_services_can_be_narrowed_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    settings = FerrySettings(home=tmp_path)
    narrowed = Supervisor(settings, SupervisorSettings(services="trainer"))
    assert [spec.name for spec in narrowed.services()] == ["trainer"]
    with pytest.raises(SupervisorError, match=r"not installed: \['nope'\]"):
        Supervisor(settings, SupervisorSettings(services="trainer,nope")).services()


def test_a_deep_home_keeps_its_socket_path_short(tmp_path: Path) -> None:
    deep = Supervisor(FerrySettings(home=tmp_path / ("d" * 120)))
    assert len(str(deep.socket)) <= 100 and str(deep.socket).startswith("/tmp/ferry-supervisor-")


def test_the_services_get_the_settings_the_token_and_each_others_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_REGISTRY_PORT", "23456")
    settings = FerrySettings(home=Path("relative-home"), postgres_port=5999, datasets_root=tmp_path / "data")
    tokens = ensure_tokens_file(FerrySettings(home=tmp_path))
    webhook_tokens = ensure_webhook_tokens_file(FerrySettings(home=tmp_path))
    env = service_environment(settings, tokens, webhook_tokens)
    assert env["FERRY_HOME"] == str(Path("relative-home").absolute())
    assert "FERRY_DATABASE_URL" not in env and env["FERRY_POSTGRES_PORT"] == "5999"  # set, it would mean external
    assert env["FERRY_DATASETS_ROOT"] == str(tmp_path / "data")
    assert env[TOKENS_FILE_ENV] == str(tokens.path)
    assert env["FERRY_API_TOKEN"] == operator_token(tokens.path)
    assert env[WEBHOOK_TOKENS_FILE_ENV] == str(webhook_tokens.path)
    assert env["FERRY_REGISTRY_URL"] == "http://127.0.0.1:23456"
    assert (
        FerrySettings.model_validate(
            {key[len("FERRY_") :].lower(): value for key, value in settings_environment(settings).items()}
        ).postgres_port
        == 5999
    )


def test_status_renders_restarts_and_health() -> None:
    table = render(
        [
            Part("kafka", 10, 9092, "running", True),
            Part("registry", 12, 8081, "running", True, restarts=2, last_start=0.0 + 86_400),
            Part("trainer", None, 8083, "backoff", False),
            Part("gateway", None, 8080, "not started", False),
        ]
    ).splitlines()
    assert table[0].split() == ["part", "pid", "port", "state", "health", "last", "restart"]
    assert table[2].split()[:5] == ["registry", "12", "8081", "running", "ok"] and "(2 restarts)" in table[2]
    assert table[3].split() == ["trainer", "-", "8083", "backoff", "DOWN", "-"]
    assert table[4].split() == ["gateway", "-", "8080", "not", "started", "-", "-"]


def test_a_running_daemon_knows_whether_the_settings_changed(tmp_path: Path) -> None:
    supervisor = Supervisor(FerrySettings(home=tmp_path))
    started_with = {"FERRY_REGISTRY_PORT": "9000", "PATH": "/bin"}
    assert supervisor.settings_changed(started_with)  # nothing recorded yet
    supervisor.folder.mkdir(parents=True)
    supervisor.settings_file.write_text(settings_digest(started_with))
    assert not supervisor.settings_changed(started_with | {"PATH": "/usr/bin", "FERRY_SUPERVISOR_SERVICES": "x"})
    assert supervisor.settings_changed(started_with | {"FERRY_REGISTRY_PORT": "9001"})
