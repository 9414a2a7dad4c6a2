"""Who may read and write which topic: one Kafka user per service, and the ACLs that bound it.

The table follows the design's topic table (docs/events.md): a service reads the topics it consumes
(and joins groups named after itself), and writes the topics it produces plus the dead-letter topic of
each topic it consumes. Nothing else: the trainer cannot publish ``model.decided`` and the gateway
publishes nothing but its inference logs, the feedback posted to it and its own dead letters. The local
stack applies it with :func:`acls_for` (KRaft's StandardAuthorizer); a cluster's operator (Strimzi's
KafkaUser, a managed Kafka) applies the same.

``operator`` is a person at the CLI: ``ferry train`` writes requests, ``ferry dlq replay`` puts any
topic's dead letters back, ``ferry runs`` reads. The console replays dead letters for an operator who
presented an API token, so its user may write every topic too.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.dead_letter import dlq_topic


@dataclass(frozen=True)
class Access:
    """One Kafka user's topics (design names) and consumer-group prefixes."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    group_prefixes: tuple[str, ...]
    every_topic: bool = False
    """Read and write every topic under the prefix, dead-letter topics included."""
    reads_by_time: tuple[str, ...] = ()
    """Topics it reads without a group, from a time on (offsets-for-times): READ, and no dead letters."""

    def read_topics(self, prefix: str) -> list[str]:
        """The topics it consumes, and those it reads by time."""
        return [f"{prefix}{name}" for name in dict.fromkeys((*self.reads, *self.reads_by_time))]

    def write_topics(self, prefix: str) -> list[str]:
        """The topics it produces, and the dead-letter topic of each it consumes."""
        written = [f"{prefix}{name}" for name in self.writes]
        return written + [dlq_topic(f"{prefix}{name}") for name in self.reads if dlq_topic(name) not in self.writes]


ACCESS: dict[str, Access] = {
    # The registry consumes artifacts and decisions; its relay publishes registrations and deployments, and
    # an upload (`ferry register`) is announced as model.trained.
    "registry": Access(
        reads=("model.trained", "model.decided"),
        writes=("model.registered", "deployment.changed", "model.trained"),
        group_prefixes=("registry",),
    ),
    "trainer": Access(
        reads=("training.requested",), writes=("training.status", "model.trained"), group_prefixes=("trainer",)
    ),
    # A retrain alert: the evaluator reads the labelled production window and its cooldown back by time, and
    # publishes the training request.
    "evaluator": Access(
        reads=("model.registered", "alert"),
        writes=("model.decided", "training.requested"),
        group_prefixes=("evaluator",),
        reads_by_time=("inference.logged", "inference.feedback", "training.requested"),
    ),
    # The gateway logs a sample of what it answers, and passes on the ground truth posted to it.
    "gateway": Access(
        reads=("deployment.changed",), writes=("inference.logged", "inference.feedback"), group_prefixes=("gateway",)
    ),
    # The monitor follows deployments, and joins the gateway's logged answers to their feedback.
    "monitor": Access(
        reads=("deployment.changed", "inference.logged", "inference.feedback"),
        writes=("alert",),
        group_prefixes=("monitor",),
    ),
    "console": Access(
        reads=("training.requested", "training.status"), writes=(), group_prefixes=("console",), every_topic=True
    ),
    "operator": Access(reads=(), writes=(), group_prefixes=("ferry-cli",), every_topic=True),
}
"""Every Kafka user but the admin (the broker's own super user, which creates topics and ACLs)."""

ADMIN = "admin"
