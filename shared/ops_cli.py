"""The registry's day-to-day verbs over the typed registry client: ``ferry models [show NAME]``,
``ferry versions MODEL``, ``ferry history MODEL``, ``ferry promote``, ``ferry rollback`` and ``ferry canary``.

Reads need nothing; writes carry the operator's token (``shared.ops_common.operator_token``). Each verb
prints a table, or JSON with ``--json``, and exits with a code of ``shared.ops_common.Exit``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from datetime import datetime
from itertools import islice
from typing import Any, Literal

from shared.ops_common import CommandError, Exit, Table, add_json_flag, emit, failures, registry_url, run_verb
from shared.registry_client import RegistryClient, RetryBudget
from shared.registry_models import DeploymentChangeOut, DeploymentOut, HistoryEntryOut, VersionOut
from shared.settings import FerrySettings

Command = Callable[[argparse.Namespace, FerrySettings], int]
Connect = Callable[[FerrySettings, bool], RegistryClient]
"""(settings, write) -> a client of the registry; with write, one that carries the operator's token."""

LATEST_SHOWN = 5


def connect(settings: FerrySettings, write: bool, *, timeout_s: float = 10.0) -> RegistryClient:
    from shared.ops_common import operator_token

    token = operator_token(settings) if write else None
    logging.getLogger("shared.registry_client").setLevel(logging.ERROR)  # the verb's own error says it once
    budget = RetryBudget(attempts=3, total_s=max(10.0, timeout_s))
    return RegistryClient.connect(registry_url(), token=token, budget=budget, timeout_s=timeout_s)


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def _version(number: int | None) -> str | None:
    return f"v{number}" if number is not None else None


def _change(before: Any, after: Any) -> str:
    shown = [
        f"v{value}" if isinstance(value, int) else "-" if value is None else str(value) for value in (before, after)
    ]
    return shown[1] if before == after else f"{shown[0]} -> {shown[1]}"


def _records(items: Any) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json") for item in items]


def models_table(client: RegistryClient) -> Table:
    models = list(client.models())
    rows = [
        (m.name, _version(m.latest_version), _version(m.champion), _version(m.challenger), _when(m.updated_at))
        for m in models
    ]
    return Table("models", ("name", "latest", "champion", "challenger", "updated"), rows, _records(models))


def versions_rows(versions: list[VersionOut]) -> list[tuple[Any, ...]]:
    """One row a version; its validation column holds the metrics of its task (VersionOut.validation_summary)."""
    return [
        (
            _version(v.version),
            v.status,
            v.validation_summary(),
            v.arch,
            v.dataset,
            v.artifact.sha256[:12],
            _when(v.created_at),
            v.cause_summary(),
        )
        for v in versions
    ]


VERSION_COLUMNS = ("version", "status", "validation", "arch", "dataset", "sha256", "created", "cause")


def versions_table(client: RegistryClient, name: str, limit: int | None = None) -> Table:
    versions = list(islice(client.versions(name), limit))
    return Table(f"versions of {name}", VERSION_COLUMNS, versions_rows(versions), _records(versions))


def deployment_line(deployment: DeploymentOut) -> str:
    if deployment.revision == 0:
        return f"{deployment.model_name}: never deployed"
    line = f"{deployment.model_name}: champion {_version(deployment.champion) or 'none'}"
    if deployment.challenger is not None:
        mode = "shadow" if deployment.shadow else "canary"
        line += f", challenger {_version(deployment.challenger)} ({mode} {deployment.canary_weight:.0%})"
    return f"{line} (revision {deployment.revision})"


def show(client: RegistryClient, name: str, *, as_json: bool) -> int:
    model = client.model(name)
    deployment = client.deployment(name)
    latest = versions_table(client, name, LATEST_SHOWN)
    if as_json:
        record = {"model": model.model_dump(mode="json"), "deployment": deployment.model_dump(mode="json")}
        emit(Table("", (), (), {**record, "latest_versions": latest.records}), as_json=True)
        return Exit.OK
    print(f"{model.name}: {model.description or '(no description)'}")
    print(deployment_line(deployment))
    emit(Table(f"latest {LATEST_SHOWN} versions", latest.columns, latest.rows, None), as_json=False)
    return Exit.OK


def history_table(client: RegistryClient, name: str) -> Table:
    entries: list[HistoryEntryOut] = list(client.history(name))
    rows = [
        (
            e.revision,
            e.action + (" (forced)" if e.forced else ""),
            _change(e.from_champion, e.to_champion),
            _change(e.from_challenger, e.to_challenger),
            _change(f"{e.from_canary_weight:.0%}", f"{e.to_canary_weight:.0%}"),
            e.actor,
            e.reason,
            _when(e.created_at),
        )
        for e in entries
    ]
    columns = ("revision", "action", "champion", "challenger", "canary", "actor", "reason", "time")
    return Table(f"deployment history of {name}", columns, rows, _records(entries))


def report_change(change: DeploymentChangeOut, *, as_json: bool) -> int:
    if as_json:
        emit(Table("", (), (), change.model_dump(mode="json")), as_json=True)
    else:
        print(deployment_line(change) + ("" if change.changed else " - unchanged, it already was so"))
    return Exit.OK


def weight(text: str) -> float:
    """A canary weight: 0..1, or a percentage such as 10%."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a weight (0..1, or a percentage like 10%)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: a weight is 0..1 (0%..100%)")
    return value


def version_number(text: str) -> int:
    number = int(text[1:] if text.lower().startswith("v") else text) if text.lstrip("vV").isdigit() else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ... or v1, v2, ...)")
    return number


def _bound(connect: Connect, body: Callable[[RegistryClient], int], *, write: bool) -> Command:
    def command(args: argparse.Namespace, settings: FerrySettings) -> int:
        def run() -> int:
            client = connect(settings, write)
            try:
                with failures("registry", registry_url()):
                    return body(client)
            finally:
                client.close()

        return run_verb(run)

    return command


def commands(connect: Connect) -> dict[str, Callable[[argparse.Namespace, FerrySettings], int]]:
    """The verbs' bodies over ``connect`` (a test passes one that returns a fake or a TestClient's client)."""

    def table(make: Callable[[RegistryClient, argparse.Namespace], Table]) -> Command:
        def command(args: argparse.Namespace, settings: FerrySettings) -> int:
            def body(client: RegistryClient) -> int:
                emit(make(client, args), as_json=args.json)
                return Exit.OK

            return _bound(connect, body, write=False)(args, settings)

        return command

    def write(make: Callable[[RegistryClient, argparse.Namespace], DeploymentChangeOut]) -> Command:
        def command(args: argparse.Namespace, settings: FerrySettings) -> int:
            return _bound(connect, lambda client: report_change(make(client, args), as_json=args.json), write=True)(
                args, settings
            )

        return command

    def show_command(args: argparse.Namespace, settings: FerrySettings) -> int:
        return _bound(connect, lambda client: show(client, args.name, as_json=args.json), write=False)(args, settings)

    return {
        "models": table(lambda client, args: models_table(client)),
        "models.show": show_command,
        "versions": table(lambda client, args: versions_table(client, args.model, args.limit)),
        "history": table(lambda client, args: history_table(client, args.model)),
        "promote": write(_promote),
        "rollback": write(_rollback),
        "canary": write(lambda client, args: client.set_canary_weight(args.model, args.weight, reason=args.reason)),
    }


def _promote(client: RegistryClient, args: argparse.Namespace) -> DeploymentChangeOut:
    if args.force and not args.explained:
        raise CommandError(Exit.USAGE, "--force needs --reason: the history records why a judged version was forced")
    stage: Literal["canary", "champion"] = "canary" if args.canary is not None else "champion"
    return client.promote(
        args.model, args.version, reason=args.reason, stage=stage, canary_weight=args.canary, force=args.force
    )


def _rollback(client: RegistryClient, args: argparse.Namespace) -> DeploymentChangeOut:
    """The challenger if there is one (what a person means first), else the champion; or ``--version``."""
    version = args.version if args.version is not None else client.deployment(args.model).challenger
    return client.rollback(args.model, reason=args.reason, version=version)


def add_parsers(sub: Any) -> None:
    """The verbs' parsers, on the ``ferry`` parser's subparsers."""
    models = sub.add_parser("models", help="list the registered models (or: models show NAME)")
    add_json_flag(models)
    shown = models.add_subparsers(dest="action", required=False).add_parser(
        "show", help="one model: its deployment and latest versions"
    )
    shown.add_argument("name", help="model name")
    add_json_flag(shown)
    versions = sub.add_parser("versions", help="a model's versions, newest first")
    versions.add_argument("model")
    versions.add_argument("--limit", type=int, default=None, help="show only the newest N")
    history = sub.add_parser("history", help="a model's deployment history: who changed what, when and why")
    history.add_argument("model")
    promote = sub.add_parser("promote", help="make a version the champion, or with --canary the challenger")
    promote.add_argument("model")
    promote.add_argument("version", type=version_number)
    promote.add_argument("--canary", type=weight, default=None, metavar="WEIGHT", help="as a canary: 0..1 or 10%%")
    promote.add_argument(
        "--force", action="store_true", help="promote a rejected or rolled-back version (needs --reason)"
    )
    rollback = sub.add_parser("rollback", help="withdraw the challenger, or put the previous champion back")
    rollback.add_argument("model")
    rollback.add_argument(
        "--version",
        type=version_number,
        default=None,
        help="the version to roll back (default: the challenger, else the champion)",
    )
    canary = sub.add_parser("canary", help="set the share of traffic the challenger gets")
    canary.add_argument("model")
    canary.add_argument("weight", type=weight, help="0..1, or a percentage like 10%%")
    for parser, verb in ((promote, "promote"), (rollback, "rollback"), (canary, "canary")):
        parser.add_argument("--reason", default=None, help="why (kept in the deployment history)")
        parser.set_defaults(default_reason=f"by hand: ferry {verb}")
    for parser in (versions, history, promote, rollback, canary):
        add_json_flag(parser)


def register(sub: Any, connect: Connect = connect) -> dict[str, Command]:
    """Add the registry verbs to ``sub`` and return their commands (``shared.cli`` calls it)."""
    add_parsers(sub)
    found = commands(connect)

    def with_reason(command: Command) -> Command:
        def run(args: argparse.Namespace, settings: FerrySettings) -> int:
            args.explained = getattr(args, "reason", None) is not None
            if not args.explained and hasattr(args, "default_reason"):
                args.reason = args.default_reason
            return command(args, settings)

        return run

    return {key: with_reason(command) for key, command in found.items()}
