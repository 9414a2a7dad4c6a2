"""One leader among a service's replicas: whoever holds a PostgreSQL session-level advisory lock.

The lock lives on a connection of its own; PostgreSQL drops it when that connection ends, so a leader
killed with -9 hands over as soon as the server sees its socket close (at once on one machine; after
TCP keepalive when a host vanishes). The others try for the lock every ``retry_s``: that is the bound
on a hand-over after the old leader's connection is gone. The registry's outbox relay takes its lock
the same way (services/registry/adapters/outbox.py). While the database is away every replica leads
(``AWAY``). ``advisory_mutex`` is the same kind of lock held for one block, waited for: what serialises
one model's retrain decisions across the evaluator's replicas.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from shared.errors import TransientError

log = logging.getLogger(__name__)

AWAY = True
"""What ``leads()`` answers while the database does not: a replica that cannot ask leads, because a
duplicate (which derived ids and idempotent handlers absorb) costs less than an alert nobody sends."""


def lock_key(name: str) -> int:
    """A stable 63-bit key for ``name`` (``ferry.monitor.alerts``, …): the same in every process."""
    return zlib.crc32(f"ferry.leader:{name}".encode()) | (0x7E57 << 32)


class AdvisoryLeader:
    """``leads()`` is True while this process holds the lock named ``name``; thread-safe and cheap to call."""

    def __init__(
        self,
        connect: Callable[[], Any],
        name: str,
        *,
        retry_s: float = 1.0,
        check_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.name = name
        self.key = lock_key(name)
        self._retry_s, self._check_s, self._clock = retry_s, check_s, clock
        self._connection: Any = None
        self._answer = False
        self._away_retry_s = max(retry_s, 10.0)  # a server that is away may take a connect timeout to say so
        self._next_try = 0.0
        self._lock = threading.Lock()

    @classmethod
    def for_database(cls, database_url: str, name: str, **options: Any) -> AdvisoryLeader:
        """A leader over its own SQLAlchemy engine (one connection, never pooled away)."""
        from sqlalchemy import create_engine

        engine = create_engine(database_url, poolclass=_null_pool(), connect_args={"connect_timeout": 5})
        return cls(lambda: engine.connect().execution_options(isolation_level="AUTOCOMMIT"), name, **options)

    def leads(self) -> bool:
        """True while this process holds the lock, or while the database does not answer (see ``AWAY``)."""
        with self._lock:
            now = self._clock()
            if now < self._next_try:
                return self._answer
            try:
                if self._connection is not None:
                    self._hold()
                    self._answer = True
                else:
                    self._answer = self._take()
                self._next_try = now + (self._check_s if self._answer else self._retry_s)
            except Exception as error:  # noqa: BLE001 - the database away: see AWAY
                if self._answer is not AWAY or self._connection is not None:
                    log.warning("leadership %s: the database does not answer (%s); acting as leader", self.name, error)
                self._drop()
                self._answer = AWAY
                self._next_try = now + self._away_retry_s
            return self._answer

    def _take(self) -> bool:
        from sqlalchemy import text

        connection = self._connect()
        try:
            locked = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
        except BaseException:
            connection.close()
            raise
        if not locked:
            connection.close()
            return False
        self._connection = connection
        log.info("this process leads %s", self.name)
        return True

    def _hold(self) -> bool:
        from sqlalchemy import text

        self._connection.execute(text("SELECT 1"))
        return True

    def _drop(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.invalidate()  # closed, not pooled: the session's lock goes with it
                connection.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                log.debug("closing the leadership connection failed", exc_info=True)

    def close(self) -> None:
        """Give the lock up: another process may lead at once."""
        with self._lock:
            self._drop()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


@contextmanager
def advisory_mutex(connect: Callable[[], Any], name: str) -> Iterator[bool]:
    """Hold the session-level advisory lock ``name`` for the block, waiting for it; yields True when held.

    While the database does not answer the block runs without it (yields False), as ``AWAY`` leads: a duplicate,
    which derived ids absorb downstream, costs less than an effect nobody performs."""
    from sqlalchemy import text

    key = lock_key(name)
    try:
        connection = connect()
    except Exception as error:  # noqa: BLE001 - the database away: see AWAY
        log.warning("lock %s: the database does not answer (%s); going on without it", name, error)
        connection = None
    if connection is None:
        yield False
        return
    try:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
    except Exception as error:
        connection.close()
        raise TransientError(f"lock {name}: {type(error).__name__}") from error
    try:
        yield True
    finally:
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            connection.close()


def database_mutex(database_url: str) -> Callable[[str], AbstractContextManager[bool]]:
    """``advisory_mutex`` over one engine of ``database_url``: ``mutex(name)`` gives a context manager."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url, poolclass=_null_pool(), connect_args={"connect_timeout": 5})

    def connect() -> Any:
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    return lambda name: advisory_mutex(connect, name)
