"""Which incoming alert episodes are already on their way to Kafka: a bounded memory of event ids.

Alertmanager sends one episode many times (every ``repeat_interval``, whenever its group changes, once
from each Alertmanager of an HA pair, again after a timed-out webhook); its event id is derived from the
alert's fingerprint and start, so each copy has the same id, and this memory lets only the first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable


class RecentIds:
    """Event ids claimed for publication, the oldest forgotten first past ``limit``.

    A claim is atomic, so two copies arriving together are published once; a failed publication is
    released, so the sender's retry is published.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, event_ids: Iterable[str]) -> list[bool]:
        """For each id, True when it is new (now claimed), False for one claimed before (or earlier in the list)."""
        claimed = []
        with self._lock:
            for event_id in event_ids:
                fresh = event_id not in self._ids
                if fresh:
                    self._ids[event_id] = None
                    if len(self._ids) > self._limit:
                        self._ids.popitem(last=False)
                claimed.append(fresh)
        return claimed

    def release(self, event_ids: Iterable[str]) -> None:
        """Forget ids whose publication failed: the next copy of them is new again."""
        with self._lock:
            for event_id in event_ids:
                self._ids.pop(event_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)
