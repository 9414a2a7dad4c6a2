"""Small helpers every kind of test uses: a free loopback port, and waiting on a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.local.ports import free_port

__all__ = ["free_port", "wait_for"]


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout_s: float = 60.0,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll until ``predicate`` returns something truthy and return it; fail the test after ``timeout_s``
    (with ``detail()``, say the services' logs, in the message).

    Deadlines are generous on purpose: the machine may be busy, and a test judges behaviour, not speed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}" + (f":\n{detail()}" if detail else ""))
