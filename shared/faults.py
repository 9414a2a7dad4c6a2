"""Named fault points for crash tests.

A process started with ``FERRY_FAULT_POINT=<name>`` (or ``<name>@<n>``: the n-th time it is reached)
reports reaching that point and exits at once with :data:`FAULT_EXIT_CODE`, as a crash would: no
clean-up, no commit, no flush. The report is one line on stderr and, when ``FERRY_FAULT_REPORT``
names a file, the same line appended there, so a test can prove the fault landed where it meant it
to, and only then count what was lost, duplicated or reordered.

Production code calls :func:`fault_point` at the places worth crashing in; unarmed, it costs one
comparison.
"""

from __future__ import annotations

import os
import sys

ENV = "FERRY_FAULT_POINT"
REPORT_ENV = "FERRY_FAULT_REPORT"
REACHED = "ferry fault point reached: "
FAULT_EXIT_CODE = 86


def _armed() -> tuple[str | None, int]:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None, 0
    name, _, nth = spec.partition("@")
    return name, int(nth) if nth.isdigit() and int(nth) > 0 else 1


_ARMED_NAME, _ARMED_NTH = _armed()
_hits = 0


def fault_point(name: str) -> None:
    """Crash here if this process was armed with ``name`` (and this is the armed hit)."""
    global _hits
    if name != _ARMED_NAME:
        return
    _hits += 1
    if _hits < _ARMED_NTH:
        return
    line = f"{REACHED}{name}\n"
    report = os.environ.get(REPORT_ENV)
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
    sys.stderr.write(line)
    sys.stderr.flush()
    os._exit(FAULT_EXIT_CODE)


def reached(report_file: str | os.PathLike[str]) -> list[str]:
    """The fault points a report file says were reached, in order (for tests)."""
    try:
        with open(report_file, encoding="utf-8") as source:
            return [line[len(REACHED) :].strip() for line in source if line.startswith(REACHED)]
    except FileNotFoundError:
        return []
