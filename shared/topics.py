"""Topic administration: every design topic and its DLQ, created idempotently."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared.events import TOPICS
from shared.kafka import dlq_topic
from shared.settings import FerrySettings

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
        return created
    finally:
        admin.close()
