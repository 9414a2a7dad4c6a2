"""The Kafka users' table against what each service really consumes and produces, and what make up gives
each supervised service: its own user, never another's."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from shared.events import TOPICS
from shared.kafka_access import ACCESS
from shared.local.supervisor import Supervisor
from shared.services import SERVICES
from shared.settings import FerrySettings


@pytest.mark.parametrize("service", ["registry", "trainer", "evaluator", "gateway", "monitor"])
def test_each_service_reads_exactly_the_topics_its_handlers_consume(service: str) -> None:
    module = importlib.import_module(f"services.{service}.handlers")
    # HANDLERS, and the tables of further loops beside it (the monitor's ONLINE_ACCURACY_HANDLERS, say)
    tables = [table for name, table in vars(module).items() if name.endswith("HANDLERS") and isinstance(table, dict)]
    assert set(ACCESS[service].reads) == {event.topic for table in tables for event in table}


def test_every_named_topic_is_a_design_topic_and_no_service_writes_a_decision_but_the_evaluator() -> None:
    for access in ACCESS.values():
        assert set(access.reads) | set(access.writes) <= set(TOPICS)
    writers = {user for user, access in ACCESS.items() if "model.decided" in access.writes or access.every_topic}
    assert writers == {"evaluator", "console", "operator"}
    assert ACCESS["gateway"].write_topics("ferry.") == [
        "ferry.inference.logged",
        "ferry.inference.feedback",
        "ferry.deployment.changed.dlq",
    ]
    assert ACCESS["trainer"].write_topics("p.") == ["p.training.status", "p.model.trained", "p.training.requested.dlq"]


def test_every_supervised_service_has_a_kafka_user() -> None:
    assert {spec.name for spec in SERVICES} <= set(ACCESS)


def test_a_secured_make_up_gives_each_program_its_own_credential(tmp_path: Path) -> None:
    settings = FerrySettings(home=tmp_path, kafka_security_protocol="SASL_SSL")
    config = Supervisor(settings).render_config(tmp_path)
    secrets = tmp_path.absolute() / "secrets" / "kafka"
    for spec in Supervisor(settings).services():
        section = config.split(f"[program:{spec.name}]")[1].split("[program:")[0]
        assert f'FERRY_KAFKA_USERNAME="{spec.name}"' in section
        assert f'FERRY_KAFKA_PASSWORD_FILE="{secrets / spec.name}.password"' in section
        assert f'FERRY_KAFKA_SSL_CAFILE="{secrets}/ca.pem"' in section
    plain = Supervisor(FerrySettings(home=tmp_path)).render_config(tmp_path)
    assert "FERRY_KAFKA_USERNAME" not in plain


def test_sasl_ssl_without_a_credential_says_which_settings_are_missing(tmp_path: Path) -> None:
    settings = FerrySettings(home=tmp_path, kafka_security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match="FERRY_KAFKA_USERNAME and FERRY_KAFKA_PASSWORD_FILE"):
        settings.kafka_client_options()
    missing = settings.model_copy(update={"kafka_username": "trainer", "kafka_password_file": tmp_path / "nope"})
    with pytest.raises(ValueError, match="FERRY_KAFKA_PASSWORD_FILE cannot be read"):
        missing.kafka_client_options()
    (tmp_path / "pw").write_text("s3cret\n")
    options = missing.model_copy(update={"kafka_password_file": tmp_path / "pw"}).kafka_client_options()
    assert options["sasl_plain_password"] == "s3cret" and options["security_protocol"] == "SASL_SSL"
    assert "s3cret" not in repr(settings)
