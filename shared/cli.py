"""The ``ferry`` command: the local system, topics, event schemas, and (through the services) training.

The parser is argparse, not Typer: services contribute verbs through the ``ferry.commands`` entry
points as ``register(subparsers)``, a contract the trainer and the evaluator already build on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from shared import datasets_cli, dlq_cli, ops_cli, ops_tools, register_cli, runs_cli, trace_cli
from shared.settings import FerrySettings

Command = Callable[[argparse.Namespace, FerrySettings], int]


def _stack_up(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.local.stack import Stack

    stack = Stack(settings)
    started = time.monotonic()
    stack.up()
    print(f"stack up in {time.monotonic() - started:.1f}s")
    for name, state in stack.status().items():
        print(f"  {name:9} {state}")
    print(f"  database  {stack.database_url}")
    return 0


def _up(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.local.postgres import PostgresError
    from shared.local.seaweedfs import SeaweedError
    from shared.local.stack import StackError
    from shared.local.supervisor import SupervisorError
    from shared.local.system import up
    from shared.local.tokens import TokenError

    try:
        return up(settings)
    except (StackError, PostgresError, SupervisorError, TokenError, SeaweedError) as error:
        print(f"ferry up failed: {error}", file=sys.stderr)
        return 1


def _down(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.local.system import down

    return down(settings)


def _status(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.local.supervisor import SupervisorError
    from shared.local.system import healthy, render, status

    try:
        parts = status(settings)
    except SupervisorError as error:
        print(f"ferry status failed: {error}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps([part.as_dict() for part in parts], indent=2))
    else:
        print(render(parts))
    return 0 if healthy(parts) else 1


def _topics(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.topics import all_topic_names, ensure_topics

    created = ensure_topics(settings)
    for name in all_topic_names(settings):
        print(f"{name}{'  (created)' if name in created else ''}")
    return 0


def _schemas(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.events import json_schemas

    schemas = json_schemas()
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for type_name, schema in schemas.items():
            (folder / f"{type_name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote {len(schemas)} schemas to {folder}")
    else:
        print(json.dumps(schemas, indent=2))
    return 0


def _roundtrip(args: argparse.Namespace, settings: FerrySettings) -> int:
    """Publish one event and read it back: proof that the broker and the envelope work."""
    from shared.envelope import decode
    from shared.events import TrainingStatus
    from shared.kafka import KafkaPublisher, make_consumer
    from shared.waiting import NotReady, wait_for, wait_for_assignment

    request_id = f"roundtrip-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, f"roundtrip-{request_id}", [TrainingStatus.topic], auto_offset_reset="latest")
    publisher = KafkaPublisher(settings, source="ferry/cli")

    def read_back() -> tuple[str, str, list[str]] | None:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                decoded = decode(record.headers, record.key, record.value)
                if getattr(decoded.event, "request_id", None) == request_id:
                    return decoded.meta.type_name, decoded.meta.event_id, sorted(name for name, _ in record.headers)
        return None

    try:
        wait_for_assignment(consumer, timeout_s=60)
        publisher.publish(TrainingStatus(model_name="roundtrip", request_id=request_id, state="started"))
        type_name, event_id, headers = wait_for(read_back, what="the event", timeout_s=30, first_s=0.01, max_s=0.1)
    except NotReady as error:
        print(f"round trip failed: {error}", file=sys.stderr)
        return 1
    finally:
        consumer.close()
        publisher.close()
    print(f"round trip ok: {type_name} id={event_id}")
    print(f"  headers: {headers}")
    return 0


def _demo(args: argparse.Namespace, settings: FerrySettings) -> int:
    from shared.local.demo import demo_command

    return demo_command(args, settings)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(prog="ferry", description="Ferry: models from a training request to traffic")
    commands: dict[str, Command] = {}
    sub = parser.add_subparsers(dest="command", required=True)
    for verb, function, text in (
        ("up", _up, "start Kafka, PostgreSQL and every installed service under supervisord (make up)"),
        ("down", _down, "stop everything 'up' started (make down)"),
        ("status", _status, "each part's pid, port, state, health and last restart (make status)"),
    ):
        verb_parser = sub.add_parser(verb, help=text)
        if verb == "status":
            verb_parser.add_argument("--json", action="store_true", help="print the parts as JSON")
        commands[verb] = function
    stack = sub.add_parser("stack", help="the local Kafka + PostgreSQL stack").add_subparsers(
        dest="action", required=True
    )
    for action, function, text in (
        ("up", _stack_up, "start Kafka and PostgreSQL alone (idempotent)"),
        ("down", _down, "stop everything, as 'ferry down'"),
        ("status", _status, "as 'ferry status'"),
    ):
        stack.add_parser(action, help=text)
        commands[f"stack.{action}"] = function
    sub.add_parser("topics", help="create and list Ferry's topics")
    commands["topics"] = _topics
    schemas = sub.add_parser("schemas", help="print (or write) the JSON Schema of every event")
    schemas.add_argument("--out", help="folder to write one file per event type")
    commands["schemas"] = _schemas
    sub.add_parser("roundtrip", help="publish an event and consume it back")
    commands["roundtrip"] = _roundtrip
    demo = sub.add_parser("demo", help="start everything (as 'ferry up') and run the whole loop")
    demo.add_argument("--down", action="store_true", help="stop everything afterwards (as 'ferry down')")
    demo.add_argument(
        "--drift", action="store_true", help="the closing loop: inputs shift, drift fires, a retrain is judged"
    )
    commands["demo"] = _demo
    commands.update(dlq_cli.register(sub))
    commands.update(datasets_cli.register(sub))
    commands.update(ops_cli.register(sub))
    commands.update(ops_tools.register(sub))
    commands.update(register_cli.register(sub))
    commands.update(runs_cli.register(sub))
    commands.update(trace_cli.register(sub))
    _add_service_commands(sub, commands)
    return parser, commands


COMMAND_ENTRY_POINTS = "ferry.commands"
"""Entry-point group through which services contribute verbs (``ferry train``, ``ferry compare``).

Each entry point names a function ``register(subparsers) -> dict[str, Command]``: it adds its parsers and
returns the commands by key (the verb, or ``verb.action`` for a verb with actions). ``shared`` never
imports a service; it only finds what is installed.
"""


def _add_service_commands(sub: argparse._SubParsersAction, commands: dict[str, Command]) -> None:
    """Commands that installed services contribute through the ``ferry.commands`` entry points."""
    for entry in sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda found: found.name):
        try:
            register = entry.load()
        except ImportError as error:  # a service whose dependencies are missing: the rest still work
            logging.getLogger(__name__).warning("ferry %s is unavailable: %s", entry.name, error)
            continue
        commands.update(register(sub))


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    key = f"{args.command}.{args.action}" if getattr(args, "action", None) else args.command
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = FerrySettings()
    except ValueError as error:
        print(f"invalid FERRY_* settings: {error}", file=sys.stderr)
        return 2
    from shared.local.kafka_security import with_local_operator

    settings = with_local_operator(settings)
    return commands[key](args, settings)


if __name__ == "__main__":
    sys.exit(main())
