"""Topic administration: every design topic and its DLQ, created idempotently."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared.events import TOPICS
from shared.kafka import dlq_topic
from shared.settings import FerrySettings
from shared.waiting import wait_for

log = logging.getLogger(__name__)


def all_topic_names(settings: FerrySettings) -> list[str]:
    """Full names of the design topics and their dead-letter topics."""
    names = [settings.topic(name) for name in TOPICS]
    return names + [dlq_topic(name) for name in names]


def ensure_topics(settings: FerrySettings) -> list[str]:
    """Create the topics that do not exist yet; returns the names that were created."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="ferry-admin")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in all_topic_names(settings) if name not in existing]
        created: list[str] = []
        for name in missing:
            try:
                admin.create_topics(
                    [NewTopic(name=name, num_partitions=settings.topic_partitions, replication_factor=1)]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it first: that is the state we want
        if created:
            log.info("created topics %s", created)
        _wait_until_led(admin, all_topic_names(settings))
        return created
    finally:
        admin.close()


def _wait_until_led(admin: KafkaAdminClient, names: list[str], timeout_s: float = 30) -> None:
    """Return once every topic's partitions have a leader: a consumer that joins earlier is assigned nothing."""

    def led() -> bool:
        described = admin.describe_topics(names)
        pending = [
            topic["name"]
            for topic in described
            if topic["error_code"] or not topic["partitions"] or any(p["leader_id"] < 0 for p in topic["partitions"])
        ]
        return not pending and len(described) == len(names)

    wait_for(led, what=f"leaders for the partitions of {len(names)} topics", timeout_s=timeout_s, max_s=0.5)
