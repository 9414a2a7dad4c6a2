"""``ensure_topics`` on the real broker: ``deployment.changed`` is compacted, whether ensure_topics created
it or found it created without compaction (a stack older than the rule); its DLQ and the other topics
are not; running it again changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from shared.dead_letter import dlq_topic
from shared.settings import FerrySettings
from shared.topics import cleanup_policy, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(ferry_settings: FerrySettings) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=ferry_settings.kafka_bootstrap, client_id="compaction-test")
    yield client
    client.close()


def test_deployment_changed_is_created_compacted(ferry_settings: FerrySettings, admin: KafkaAdminClient) -> None:
    changed = ferry_settings.topic("deployment.changed")
    assert cleanup_policy(admin, changed) == "compact"
    assert cleanup_policy(admin, dlq_topic(changed)) == "delete"
    assert cleanup_policy(admin, ferry_settings.topic("model.trained")) == "delete"


def test_an_existing_uncompacted_topic_is_compacted_once(
    ferry_settings: FerrySettings, admin: KafkaAdminClient
) -> None:
    settings = ferry_settings.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}."})
    changed = settings.topic("deployment.changed")
    admin.create_topics([NewTopic(name=changed, num_partitions=settings.topic_partitions, replication_factor=1)])
    assert cleanup_policy(admin, changed) == "delete"

    created = ensure_topics(settings)
    assert changed not in created and cleanup_policy(admin, changed) == "compact"
    assert ensure_topics(settings) == [] and cleanup_policy(admin, changed) == "compact"
