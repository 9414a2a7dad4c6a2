"""FERRY_REPLICAS: parsing (bad input names the variable), N supervisord programs on distinct ports with
their own state folders, ports kept across `make up`s, and the monitor told to scrape every process."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.local.replicas import ReplicaPorts, ReplicasError, parse_replicas
from shared.local.supervisor import Supervisor, SupervisorError, SupervisorSettings
from shared.local.system import service_environment, up
from shared.local.tokens import ensure_tokens_file, ensure_webhook_tokens_file
from shared.services import SERVICES, installed_services
from shared.settings import FerrySettings

NAMES = [spec.name for spec in SERVICES]


@pytest.fixture(autouse=True)
def default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in SERVICES:
        monkeypatch.delenv(spec.port_env, raising=False)
    monkeypatch.delenv("FERRY_REPLICAS", raising=False)
    monkeypatch.delenv("FERRY_MONITOR_TARGETS", raising=False)


def test_replicas_parse_and_a_service_not_named_runs_once() -> None:
    assert parse_replicas(" registry=2, gateway=3 ,", NAMES) == {"registry": 2, "gateway": 3}
    assert parse_replicas("", NAMES) == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("gateway", "service=count"),
        ("gateway=two", "service=count"),
        ("gateway=-1", "service=count"),
        ("gatway=2", "no service named 'gatway'"),
        ("gateway=2,gateway=3", "named twice"),
        ("gateway=0", "a count is 1 to 16"),
        ("gateway=17", "a count is 1 to 16"),
    ],
)
def test_bad_replicas_are_refused_naming_the_variable(text: str, words: str) -> None:
    with pytest.raises(ReplicasError, match=f"^FERRY_REPLICAS: .*{words}"):
        parse_replicas(text, NAMES)


def test_the_supervisor_settings_refuse_bad_replicas_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_REPLICAS", "gateway=many")
    with pytest.raises(ValidationError, match="FERRY_REPLICAS: each entry is service=count"):
        SupervisorSettings()
    monkeypatch.setenv("FERRY_REPLICAS", "gateway=2")
    assert SupervisorSettings().replica_counts() == {"gateway": 2}


def _programs(supervisor: Supervisor, workdir: Path) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read_string(supervisor.render_config(workdir))
    return {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections() if s.startswith("program:")}


def _environment(program: dict[str, str]) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in program["environment"].split(","))
    return {key: value.strip('"') for key, value in pairs}


def test_two_of_every_service_are_programs_on_distinct_ports_with_their_own_state(tmp_path: Path) -> None:
    counts = ",".join(f"{spec.name}=2" for spec in installed_services())
    supervisor = Supervisor(FerrySettings(home=tmp_path), SupervisorSettings(replicas=counts))
    programs = _programs(supervisor, tmp_path)
    assert list(programs) == [name for spec in installed_services() for name in (spec.name, f"{spec.name}-2")]
    ports, replicas = set(), set()
    for name, program in programs.items():
        spec = next(spec for spec in SERVICES if name.split("-")[0] == spec.name)
        env = _environment(program)
        ports.add(int(env[spec.port_env]))
        replicas.add((spec.name, env["FERRY_REPLICA"]))
        assert program["command"].endswith(f"-m services.{spec.name}")
        assert program["stdout_logfile"] == str(tmp_path / "logs" / f"{name}.log")
    assert len(ports) == len(programs)  # every process its own port
    assert int(_environment(programs["registry"])["FERRY_REGISTRY_PORT"]) == 8081  # replica 1 keeps the service's
    assert replicas == {(spec.name, k) for spec in installed_services() for k in ("1", "2")}
    states = {FerrySettings(home=tmp_path, replica=int(k)).state_dir(name) for name, k in replicas}
    assert len(states) == len(replicas) and tmp_path / "registry" in states and tmp_path / "registry-2" in states


def test_the_ports_of_replicas_are_kept_for_the_next_up(tmp_path: Path) -> None:
    first = Supervisor(FerrySettings(home=tmp_path), SupervisorSettings(replicas="registry=3"))
    ports = [r.port for r in first.replicas() if r.spec.name == "registry"]
    again = Supervisor(FerrySettings(home=tmp_path), SupervisorSettings(replicas="registry=3,gateway=2"))
    assert [r.port for r in again.replicas() if r.spec.name == "registry"] == ports
    assert ReplicaPorts(first.folder).read().keys() == {"registry-2", "registry-3", "gateway-2"}
    assert [r.name for r in first.replicas(assign=False)][:3] == ["registry", "registry-2", "registry-3"]


def test_the_monitor_scrapes_every_replica_when_there_are_several(tmp_path: Path) -> None:
    settings = FerrySettings(home=tmp_path)
    tokens, webhooks = ensure_tokens_file(settings), ensure_webhook_tokens_file(settings)
    supervisor = Supervisor(settings, SupervisorSettings(replicas="gateway=2"))
    env = service_environment(settings, tokens, webhooks, supervisor.replicas())
    gateway_2 = next(r for r in supervisor.replicas() if r.name == "gateway-2")
    targets = env["FERRY_MONITOR_TARGETS"].split(",")
    assert "gateway=http://127.0.0.1:8080/metrics" in targets
    assert f"gateway=http://127.0.0.1:{gateway_2.port}/metrics" in targets
    assert "registry=http://127.0.0.1:8081/metrics" in targets
    assert env["FERRY_CONSOLE_GATEWAY_URLS"] == f"http://127.0.0.1:8080,http://127.0.0.1:{gateway_2.port}"
    one_each = Supervisor(settings, SupervisorSettings())
    alone = service_environment(settings, tokens, webhooks, one_each.replicas())
    assert "FERRY_MONITOR_TARGETS" not in alone and "FERRY_CONSOLE_GATEWAY_URLS" not in alone


def test_up_with_bad_replicas_says_so_before_it_starts_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_REPLICAS", "gateway=2,gatewy=2")
    with pytest.raises(SupervisorError, match=r"^FERRY_REPLICAS: no service named 'gatewy'"):
        up(FerrySettings(home=tmp_path / "home"))
    assert not (tmp_path / "home").exists()
