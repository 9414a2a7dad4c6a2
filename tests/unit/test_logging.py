"""Logs a person can read: client mistakes are marked as such, and per-request client lines are off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from shared.local.stack import PROJECT_ROOT
from shared.telemetry import CLIENT_ERROR, JsonFormatter, _mark_invalid_requests


def record(name: str, level: int, message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_a_client_error_is_marked_in_its_json_line_and_other_lines_are_not() -> None:
    formatter = JsonFormatter("toy")
    marked = json.loads(formatter.format(record("shared.kafka", logging.WARNING, "dead-lettering", **CLIENT_ERROR)))
    assert (marked["level"], marked["event"]) == ("WARNING", "client_error")
    plain = json.loads(formatter.format(record("shared.kafka", logging.WARNING, "poll failed")))
    assert "event" not in plain


def test_uvicorns_invalid_request_warning_is_marked_as_a_client_error() -> None:
    invalid = record("uvicorn.error", logging.WARNING, "Invalid HTTP request received.")
    other = record("uvicorn.error", logging.INFO, "Started server process")
    assert _mark_invalid_requests(invalid) and _mark_invalid_requests(other)
    assert getattr(invalid, "event", None) == "client_error" and not hasattr(other, "event")


def test_httpx_request_lines_are_off_once_logging_is_set_up() -> None:
    probe = (
        "import logging; from shared.telemetry import configure_logging; configure_logging('toy'); "
        "print(logging.getLogger('httpx').getEffectiveLevel(), logging.getLogger('httpcore').getEffectiveLevel(), "
        "logging.getLogger('services.x').getEffectiveLevel())"
    )
    answer = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert answer.stdout.split() == [str(logging.WARNING), str(logging.WARNING), str(logging.INFO)]
