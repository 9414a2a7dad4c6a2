"""Waiting until something is ready: one tenacity policy, exponential back-off with jitter.

Every poll-until-ready loop in ``shared`` (a broker answering, PostgreSQL accepting connections, a
service's health path, a consumer's assignment, a process gone) goes through :func:`wait_for`, so
they all back off the same way and all fail with the same :class:`NotReady`. A probe answers
falsy for "not yet"; an exception from the probe is not retried, it propagates at once (a process
that died while we waited for it is a failure, not a reason to keep asking).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential_jitter

T = TypeVar("T")


class NotReady(TimeoutError):
    """What was awaited did not happen before the deadline."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float,
    first_s: float = 0.05,
    max_s: float = 2.0,
    jitter_s: float = 0.1,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    Waits ``first_s``, then twice as long each time up to ``max_s``, each plus up to ``jitter_s``
    of random jitter (so many waiters do not probe in lockstep). Raises :class:`NotReady` once
    ``timeout_s`` has passed without a truthy answer.
    """
    retrying = Retrying(
        retry=retry_if_result(lambda answer: not answer),
        wait=wait_exponential_jitter(multiplier=first_s, max=max_s, jitter=jitter_s),
        stop=stop_after_delay(timeout_s),
    )
    try:
        answer = retrying(probe)
    except RetryError:
        raise NotReady(f"{what} was not ready after {timeout_s:.0f}s") from None
    return cast(T, answer)  # retried while falsy: never None here


def wait_for_assignment(consumer: Any, *, timeout_s: float = 60) -> set[Any]:
    """Poll a freshly subscribed Kafka consumer until the group gives it partitions; returns them.

    Whatever the polls fetch meanwhile is dropped: callers subscribe with ``auto_offset_reset="latest"``
    before they publish what they wait for.
    """

    def assigned() -> set[Any]:
        consumer.poll(timeout_ms=200)
        return set(consumer.assignment())

    return wait_for(assigned, what="the consumer's partition assignment", timeout_s=timeout_s, max_s=0.5)
