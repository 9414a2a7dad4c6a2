"""Topic administration: every design topic and its DLQ, created idempotently.

``deployment.changed`` is compacted: keyed by model name, each event carries the model's whole
deployment, so the last one per key is all a starting gateway needs (see the gateway's replay). Its DLQ
is not compacted: a dead letter is evidence, and two of one key must both stay.
"""

from __future__ import annotations

import logging

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import AuthorizationError, TopicAlreadyExistsError

from shared.events import TOPICS, DeploymentChanged
from shared.kafka import dlq_topic
from shared.settings import FerrySettings
from shared.waiting import wait_for

log = logging.getLogger(__name__)

COMPACTED = frozenset({DeploymentChanged.topic})
"""Design topics whose last event per key is the whole state (short names)."""
COMPACT = {"cleanup.policy": "compact"}


def all_topic_names(settings: FerrySettings) -> list[str]:
    """Full names of the design topics and their dead-letter topics."""
    names = [settings.topic(name) for name in TOPICS]
    return names + [dlq_topic(name) for name in names]


def compacted_topic_names(settings: FerrySettings) -> list[str]:
    """Full names of the compacted topics (their DLQs are not)."""
    return [settings.topic(name) for name in sorted(COMPACTED)]


def ensure_topics(settings: FerrySettings) -> list[str]:
    """Create the topics that do not exist yet, and make the compacted ones so (a topic created before
    they were gets ``cleanup.policy=compact`` set); returns the names that were created."""
    admin = KafkaAdminClient(**settings.kafka_client_options(), client_id="ferry-admin")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in all_topic_names(settings) if name not in existing]
        created: list[str] = []
        compacted = set(compacted_topic_names(settings))
        for name in missing:
            configs = COMPACT if name in compacted else {}
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name=name,
                            num_partitions=settings.topic_partitions,
                            replication_factor=1,
                            topic_configs=configs,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it first: that is the state we want
            except AuthorizationError:
                # A service's own credential on a secured broker may not create topics: the broker's admin
                # (`ferry stack up`, a cluster's KafkaTopic objects) does. Its consumers wait for them.
                user = settings.kafka_username
                log.info("not allowed to create topics as %s; they are the broker admin's to create", user)
                return created
        if created:
            log.info("created topics %s", created)
        _wait_until_led(admin, all_topic_names(settings))
        _compact(admin, sorted(compacted))
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


def _compact(admin: KafkaAdminClient, names: list[str]) -> None:
    """Set ``cleanup.policy=compact`` on each topic that lacks it (idempotent: one that has it is left be)."""
    for name in names:
        if cleanup_policy(admin, name) == "compact":
            continue
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, dict(COMPACT))])
        log.info("set cleanup.policy=compact on %s", name)


def cleanup_policy(admin: KafkaAdminClient, name: str) -> str:
    """The topic's ``cleanup.policy`` as the broker reports it (``delete`` when left at the default)."""
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, ["cleanup.policy"])], config_filter="all"
    )
    config = described.get("topic", {}).get(name, {}).get("cleanup.policy") or {}
    return str(config.get("value") or "delete")
