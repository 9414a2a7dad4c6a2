"""``ferry dlq list|show|replay``: read a topic's dead letters and put them back on the topic.

Exit codes: 0 done, 1 failed (the broker, a refused credential, a copy that cannot be replayed),
2 bad usage (an unknown topic, a bad time), 3 nothing matched.

Who replays: ``FERRY_API_TOKEN``'s user in the registry's tokens file (``FERRY_REGISTRY_TOKENS_FILE``,
else ``<home>/secrets/api-tokens`` when it exists); ``admin`` for ``FERRY_API_TOKEN`` when there is no
file, as the registry credits it; the OS user when neither is configured. The user is recorded on the
replayed event; the broker itself does not check it yet (Kafka ACLs will).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

from shared.credentials import InvalidTokens, parse_tokens_file, token_weakness
from shared.settings import FerrySettings

if TYPE_CHECKING:
    from shared.dead_letters import Operator

OK, FAILED, USAGE, NOTHING = 0, 1, 2, 3
TOKEN_ENV, TOKENS_FILE_ENV = "FERRY_API_TOKEN", "FERRY_REGISTRY_TOKENS_FILE"
ENV_TOKEN_USER = "admin"  # the registry's user for FERRY_API_TOKEN (services/registry/settings.py)

Command = Callable[[argparse.Namespace, FerrySettings], int]


class Refused(Exception):
    """No credential that allows a replay; the message says what to set."""


def register(subparsers: Any) -> dict[str, Command]:
    """Add ``ferry dlq`` and its actions; returns the commands by ``dlq.<action>``."""
    dlq = subparsers.add_parser("dlq", help="list, show and replay the dead letters of a topic")
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the dead letters of a topic (default: every topic)")
    listing.add_argument("topic", nargs="?", help="a topic, e.g. model.trained (default: all)")
    listing.add_argument("--since", help="only those dead-lettered at this ISO time or later (UTC if no zone)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="one dead letter, its payload and headers")
    show.add_argument("topic", help="a topic, e.g. model.trained")
    show.add_argument("id", help="the original event's ce_id, or the DLQ offset (PARTITION:OFFSET)")
    show.add_argument("--json", action="store_true", help="print JSON")
    replay = actions.add_parser("replay", help="put dead letters back on their topic (same event id)")
    replay.add_argument("topic", help="a topic, e.g. model.trained")
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--id", help="the original event's ce_id, or the DLQ offset (PARTITION:OFFSET)")
    chosen.add_argument("--since", help="every one dead-lettered at this ISO time or later (UTC if no zone)")
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed, send nothing")
    return {"dlq.list": run_list, "dlq.show": run_show, "dlq.replay": run_replay}


def parse_since(text: str | None) -> datetime | None:
    """An ISO 8601 time; a time without a zone is UTC. ValueError with a readable message."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since must be an ISO time such as 2026-12-04T21:00:00Z, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def operator_of(settings: FerrySettings, environ: Mapping[str, str] = os.environ) -> Operator:
    """Who replays (see the module's docstring); Refused when a configured credential does not hold."""
    from shared.dead_letters import Operator
    from shared.local.tokens import default_tokens_file

    token = environ.get(TOKEN_ENV)
    configured = environ.get(TOKENS_FILE_ENV)
    path = Path(configured) if configured else default_tokens_file(settings)
    if configured or path.is_file():
        try:
            users = parse_tokens_file(path, setting=TOKENS_FILE_ENV)
        except InvalidTokens as error:
            raise Refused(str(error)) from None
        if not token:
            raise Refused(f"a replay needs a credential: set {TOKEN_ENV} to your token in {path}")
        if token not in users:
            raise Refused(f"{TOKEN_ENV} is not a token of {path}")
        return Operator(users[token], "tokens-file")
    if token is not None:
        weakness = token_weakness(token)
        if weakness:
            raise Refused(f"{TOKEN_ENV} {weakness}")
        return Operator(ENV_TOKEN_USER, TOKEN_ENV)
    return Operator(getpass.getuser(), "os-user")


def run_list(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.dead_letters import DeadLetterError, UnknownTopic, read, topic_of
    from shared.events import TOPICS

    try:
        since = parse_since(args.since)
        topics = [topic_of(settings, args.topic)] if args.topic else [settings.topic(name) for name in TOPICS]
    except (ValueError, UnknownTopic) as error:
        return _fail(str(error), USAGE)
    try:
        letters = [letter for topic in topics for letter in read(settings, topic, since=since)]
    except (DeadLetterError, KafkaError, OSError) as error:
        return _fail(str(error), FAILED)
    summaries = [letter.summary(payload_chars=200) for letter in letters]
    if args.json:
        print(json.dumps(summaries, indent=2))
    for summary in summaries if not args.json else []:
        print(f"{summary['dlq']}  {summary['dead_lettered_at']}  id={summary['id']}  group={summary['group']}")
        print(f"    {summary['error_type']}: {summary['reason'][:300]}")
    if not letters and not args.json:
        print(f"no dead letters in {', '.join(topic + '.dlq' for topic in topics)}", file=sys.stderr)
    return OK if letters else NOTHING


def run_show(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.dead_letters import DeadLetterError, UnknownTopic, printable, read, topic_of

    try:
        topic = topic_of(settings, args.topic)
    except UnknownTopic as error:
        return _fail(str(error), USAGE)
    try:
        found = [letter for letter in read(settings, topic) if letter.matches(args.id)]
    except (DeadLetterError, KafkaError, OSError) as error:
        return _fail(str(error), FAILED)
    if not found:
        return _fail(f"no dead letter of {topic} matches {args.id!r}", NOTHING)
    shown = []
    for letter in found:
        summary = letter.summary()
        headers = letter.headers
        summary["headers"] = {printable(name): printable(value.decode(errors="replace")) for name, value in headers}
        shown.append(summary)
    if args.json:
        print(json.dumps(shown, indent=2))
        return OK
    for summary in shown:
        for field, value in summary.items():
            if field != "headers":
                print(f"{field:17} {value}")
        for name, value in summary["headers"].items():
            print(f"  header {name}: {value[:500]}")
    return OK


def run_replay(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.dead_letters import DeadLetterError, UnknownTopic, read, replay, select, topic_of
    from shared.kafka import make_producer

    try:
        topic, since = topic_of(settings, args.topic), parse_since(args.since)
    except (ValueError, UnknownTopic) as error:
        return _fail(str(error), USAGE)
    try:
        operator = operator_of(settings)  # before reading: a refused replay reads nothing
        letters = select(read(settings, topic, since=since), args.id)
    except Refused as error:
        return _fail(f"replay refused: {error}", FAILED)
    except (DeadLetterError, KafkaError, OSError) as error:
        return _fail(str(error), FAILED)
    if not letters:
        return _fail(f"no dead letter of {topic} matches", NOTHING)
    verb = "would replay" if args.dry_run else "replayed"
    if not args.dry_run:
        producer = make_producer(settings)
        try:
            replay(producer, topic, letters, operator)
        except (DeadLetterError, KafkaError) as error:
            return _fail(str(error), FAILED)
        finally:
            producer.close(timeout=10)
    for letter in letters:
        print(f"{verb} {letter.coordinates} id={letter.summary()['id']} to {topic} as {operator.user}")
    return OK


def _fail(message: str, code: int) -> int:
    print(f"ferry dlq: {message}", file=sys.stderr)
    return code
