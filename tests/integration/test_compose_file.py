"""deploy/compose.yaml: valid against the Compose specification's JSON schema (compose-go's, pinned in
tools/kube_schemas.py), and consistent with the services it runs. No container engine runs here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from shared.services import SERVICES
from tools import docgen
from tools.kube_schemas import COMPOSE_SPEC, ensure

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SECRET_NAMES = re.compile(r"TOKEN$|PASSWORD$|SECRET")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def spec_validator() -> Draft202012Validator:
    folder = ensure(COMPOSE_SPEC)
    return Draft202012Validator(json.loads((folder / "compose-spec.json").read_text()))


def test_the_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any], spec_validator: Draft202012Validator
) -> None:
    assert [error.message for error in spec_validator.iter_errors(compose)] == []


def test_the_schema_check_sees_a_misspelt_key(compose: dict[str, Any], spec_validator: Draft202012Validator) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["enviroment"] = {"FERRY_GATEWAY_PORT": "8080"}
    assert any("enviroment" in error.message for error in spec_validator.iter_errors(broken))


def test_every_service_runs_from_the_one_image_on_its_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert len({services[spec.name]["image"] for spec in SERVICES}) == 1
    for spec in SERVICES:
        service = services[spec.name]
        assert service["command"] == ["python", "-m", spec.module]
        assert service["environment"][spec.port_env] == str(spec.default_port)
        for published in service.get("ports", []):
            assert published.split(":")[-1] == str(spec.default_port), spec.name


def test_every_ferry_variable_is_one_a_service_reads(compose: dict[str, Any]) -> None:
    known = docgen.all_variables()
    for name, service in compose["services"].items():
        written = {key for key in service.get("environment", {}) if key.startswith("FERRY_")}
        assert written <= known, (name, written - known)
        # Secrets arrive as files (or a password interpolated from deploy/.env), never as literal values.
        assert not {key for key in written if SECRET_NAMES.search(key)}, name
        url = service.get("environment", {}).get("FERRY_DATABASE_URL", "${POSTGRES_PASSWORD")
        assert "${POSTGRES_PASSWORD" in url, name


def test_prometheus_scrapes_each_service_where_compose_runs_it(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {spec.name: [f"{spec.name}:{spec.default_port}"] for spec in SERVICES}
    [alertmanager] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager.partition(":")[0] in compose["services"]
    webhook = yaml.safe_load((DEPLOY / "compose" / "alertmanager.yml").read_text())["receivers"][0]
    assert webhook["webhook_configs"][0]["url"].startswith("http://monitor:8082/")


def test_every_mounted_file_is_in_the_repository(compose: dict[str, Any]) -> None:
    """Bind mounts name generated or source files (the secrets are the operator's, made once)."""
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).is_file(), (name, source)
