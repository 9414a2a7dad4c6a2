"""The two kinds of failure every handler and adapter can raise, free of any Kafka import.

The consumer loop (``shared.kafka``) retries the first and dead-letters the second.
"""

from __future__ import annotations


class TransientError(Exception):
    """A failure that may pass (a database or broker away): retry, never dead-letter."""


class PermanentError(Exception):
    """An event that can never succeed: dead-letter it with this reason."""
