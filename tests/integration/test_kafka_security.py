"""A secured broker, for real: TLS, SASL/SCRAM with one user per service, and KRaft's StandardAuthorizer
enforcing shared/kafka_access.py. What a service may not write or read is refused by the broker itself,
and the publisher says so in words; a wrong password or a client without TLS gets nowhere."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from loop_support import trained_event
from support import free_port

from shared.events import (
    ModelDecided,
    TrainingRequested,
    TrainingStatus,
)
from shared.kafka import KafkaPublisher, WriteRefused, kafka_answers, make_consumer
from shared.local.kafka_security import KafkaSecrets, client_settings
from shared.local.stack import PROJECT_ROOT, KafkaBroker, Stack
from shared.settings import FerrySettings
from shared.topics import ensure_topics
from shared.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured(stack: Stack) -> Iterator[FerrySettings]:
    """A SASL_SSL broker of its own (the session's is PLAINTEXT), its topics made by its admin."""
    home = PROJECT_ROOT / ".ferry-test" / f"{os.getpid()}-secured"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = FerrySettings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        kafka_security_protocol="SASL_SSL",
        cache_dir=stack.settings.resolved_cache_dir,  # the jars the session's broker fetched
        topic_prefix="ferry.",
    )
    (home / "settings.json").write_text(settings.model_dump_json())
    broker = KafkaBroker(settings)
    try:
        broker.start()
        ensure_topics(broker.admin_settings)
        yield settings
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def as_user(settings: FerrySettings, user: str) -> FerrySettings:
    return client_settings(settings, user)


def test_the_secrets_are_private_and_the_broker_speaks_only_tls_with_a_credential(secured: FerrySettings) -> None:
    found = KafkaSecrets(secured.home)
    assert oct(found.folder.stat().st_mode & 0o777) == "0o700"
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in found.folder.iterdir())
    assert kafka_answers(as_user(secured, "trainer"))
    plaintext = secured.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    assert not kafka_answers(plaintext)


def test_each_service_writes_only_the_topics_it_produces(secured: FerrySettings) -> None:
    trainer = KafkaPublisher(as_user(secured, "trainer"), source="tests")
    try:
        trainer.publish(TrainingStatus(model_name="iris", request_id="r1", state="started"))
        with pytest.raises(WriteRefused) as refused:
            trainer.publish(ModelDecided(model_name="iris", version=1, decision="reject", reason="forged"))
        assert "'trainer' writing ferry.model.decided: the topic is outside its ACL" in str(refused.value)
    finally:
        trainer.close()

    gateway = KafkaPublisher(as_user(secured, "gateway"), source="tests")
    try:
        with pytest.raises(WriteRefused):
            gateway.publish(trained_event("iris"))
    finally:
        gateway.close()
    # ... but its own dead letters it may write.
    producer = KafkaProducer(**as_user(secured, "gateway").kafka_client_options(), acks="all")
    try:
        producer.send("ferry.deployment.changed.dlq", key=b"iris", value=b"{}").get(timeout=30)
    finally:
        producer.close()

    registry = KafkaPublisher(as_user(secured, "registry"), source="tests")
    try:
        registry.publish(trained_event("iris"))  # an upload's announcement is the registry's to make
    finally:
        registry.close()


def test_reads_are_bounded_and_a_service_reads_what_it_consumes(secured: FerrySettings) -> None:
    operator = KafkaPublisher(as_user(secured, "operator"), source="tests")
    try:
        operator.publish(TrainingRequested(model_name="iris", dataset="sklearn:iris", request_id="read-me"))
    finally:
        operator.close()

    trainer = make_consumer(as_user(secured, "trainer"), "trainer-acl-test", [TrainingRequested.topic])
    try:

        def requests() -> list[bytes]:
            return [record.value for records in trainer.poll(timeout_ms=500).values() for record in records]

        assert b"read-me" in b"".join(wait_for(requests, what="the request, read as the trainer", timeout_s=60))
    finally:
        trainer.close()

    # Not the registry's topic: the broker answers its metadata request with TOPIC_AUTHORIZATION_FAILED, and
    # its consumer is given none of the topic's partitions.
    admin = KafkaAdminClient(**as_user(secured, "registry").kafka_client_options())
    try:
        described = admin.describe_topics(["ferry.training.requested", "ferry.model.trained"])
    finally:
        admin.close()
    codes = {topic["name"]: topic["error_code"] for topic in described}
    assert codes == {"ferry.training.requested": TopicAuthorizationFailedError.errno, "ferry.model.trained": 0}
    registry = KafkaConsumer(**as_user(secured, "registry").kafka_client_options(), group_id=None)
    try:
        assert not registry.partitions_for_topic("ferry.training.requested")
        assert registry.partitions_for_topic("ferry.model.trained")
    finally:
        registry.close()


def test_a_wrong_password_is_refused(secured: FerrySettings, tmp_path: object) -> None:
    wrong = KafkaSecrets(secured.home).folder / "wrong.password"
    wrong.write_text("not-the-password\n")
    impostor = as_user(secured, "evaluator").model_copy(update={"kafka_password_file": wrong})
    assert not kafka_answers(impostor)
    with pytest.raises(KafkaError):
        KafkaPublisher(impostor, source="tests").publish(
            ModelDecided(model_name="iris", version=1, decision="reject", reason="forged")
        )
