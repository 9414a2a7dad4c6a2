"""``ferry trace REQUEST_ID``: which model, version and route answered a logged request, when, under which
deployment revision, and the feedback given for it (``shared/request_trace.py`` searches the topics).

Exit codes: 0 found; 3 not logged in the window (only sampled requests are: FERRY_GATEWAY_LOG_SAMPLE);
4 the broker did not answer.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, TextIO

from shared.events import REQUEST_ID_PATTERN
from shared.ops_common import CommandError, Exit, Table, add_json_flag, emit, run_verb
from shared.settings import FerrySettings

_SINCE = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: Any) -> dict[str, Any]:
    """Add ``ferry trace`` to ``sub``; ``shared.cli`` calls it."""
    parser = sub.add_parser("trace", help="which model, version and route answered a logged request, and its feedback")
    parser.add_argument("request_id", help="the request's id (the OIP id it was sent with, or the gateway's)")
    parser.add_argument("--since", default="1h", help="how far back its answer may be: 30m, 6h, 2d (default 1h)")
    add_json_flag(parser)

    def command(args: argparse.Namespace, settings: FerrySettings) -> int:
        return run_verb(lambda: trace(args, settings))

    return {"trace": command}


def since_seconds(text: str) -> float:
    """Seconds of ``30m``, ``6h``, ``2d``; CommandError for anything else."""
    found = _SINCE.match(text)
    if not found:
        raise CommandError(Exit.USAGE, f"--since takes a number and s, m, h or d (30m, 6h, 2d), not {text[:40]!r}")
    return int(found.group(1)) * _UNIT_S[found.group(2)]


def trace(args: argparse.Namespace, settings: FerrySettings, out: TextIO | None = None) -> int:
    from kafka.errors import KafkaError

    from shared.request_trace import find_request

    if not re.match(REQUEST_ID_PATTERN, args.request_id):
        raise CommandError(Exit.USAGE, "a request id is 1-128 of A-Z a-z 0-9 . _ : -")
    try:
        found = find_request(settings, args.request_id, since_s=since_seconds(args.since))
    except (KafkaError, TimeoutError) as error:
        raise CommandError(Exit.UNREACHABLE, f"the broker did not answer: {type(error).__name__}") from error
    if found is None:
        raise CommandError(
            Exit.NOT_FOUND,
            f"request {args.request_id} is not logged in the last {args.since} (only sampled requests are: "
            "FERRY_GATEWAY_LOG_SAMPLE)",
        )
    record = found.as_dict()
    rows = [[record[name] for name in ("model", "version", "route", "revision", "at", "gateway")]]
    emit(
        Table(f"request {args.request_id}", ("model", "version", "route", "revision", "at", "gateway"), rows, record),
        as_json=args.json,
        out=out or sys.stdout,
    )
    if not args.json:
        for given in record["feedback"]:
            truth = given["label"] if given["label"] is not None else given["value"]
            print(f"feedback: {truth} by {given['actor']} at {given['at']}", file=out or sys.stdout)
        if not record["feedback"]:
            print("feedback: none", file=out or sys.stdout)
    return 0
