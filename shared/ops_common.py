"""What every day-to-day ``ferry`` verb shares: exit codes, where services and the operator's token are
found, the one mapping from errors to exit codes, and the table-or-JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO

from shared.settings import FerrySettings


class Exit(IntEnum):
    """The exit codes of the day-to-day verbs (docs/getting-started.md lists them)."""

    OK = 0
    FAILED = 1
    """A refusal or failure the user must act on: no token, a conflict, a rejected version."""
    USAGE = 2
    """The command line or its input is wrong (argparse exits 2 too)."""
    NOT_FOUND = 3
    """No such model, version or file."""
    UNREACHABLE = 4
    """The service did not answer: is it up (``ferry status``)?"""


class CommandError(Exception):
    """Ends a verb with ``code`` and ``message`` on stderr: the message says what to do."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


NO_TOKEN = "no token: set FERRY_API_TOKEN or run make up, which writes .ferry/secrets/api-tokens"


def service_url(name: str, variable: str) -> str:
    """A service's URL: ``variable`` (e.g. FERRY_REGISTRY_URL) if set, else its port on this machine."""
    from shared.services import service

    return (os.environ.get(variable) or service(name).url()).rstrip("/")


def registry_url() -> str:
    return service_url("registry", "FERRY_REGISTRY_URL")


def gateway_url() -> str:
    return service_url("gateway", "FERRY_GATEWAY_URL")


def monitor_url() -> str:
    return service_url("monitor", "FERRY_MONITOR_URL")


def operator_token(settings: FerrySettings) -> str:
    """FERRY_API_TOKEN, else the operator's line of the tokens file ``make up`` wrote; never made up here."""
    from shared.local.tokens import TOKENS_FILE_ENV, TokenError, default_tokens_file
    from shared.local.tokens import operator_token as read_operator_token

    token = os.environ.get("FERRY_API_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get(TOKENS_FILE_ENV) or default_tokens_file(settings))
    if not path.is_file():
        raise CommandError(Exit.FAILED, NO_TOKEN)
    try:
        return read_operator_token(path)
    except TokenError as error:
        raise CommandError(Exit.FAILED, f"{error}; {NO_TOKEN}") from None


@contextmanager
def failures(service: str, url: str) -> Iterator[None]:
    """Turn what the registry client (or httpx) raises into a CommandError with the right exit code."""
    import httpx

    from shared.registry_errors import (
        InvalidModelName,
        RegistryBadAnswer,
        RegistryNotFound,
        RegistryRefused,
        RegistryUnauthorized,
        RegistryUnavailable,
    )

    try:
        yield
    except InvalidModelName as error:
        raise CommandError(Exit.USAGE, str(error)) from None
    except RegistryNotFound as error:
        raise CommandError(Exit.NOT_FOUND, f"not found: {error.message}") from None
    except RegistryUnauthorized as error:
        raise CommandError(
            Exit.FAILED,
            f"the {service} refused the token ({error.status}): {error.message}; "
            "check FERRY_API_TOKEN or .ferry/secrets/api-tokens",
        ) from None
    except RegistryRefused as error:
        raise CommandError(Exit.FAILED, f"the {service} refused ({error.status}): {error.message}") from None
    except RegistryUnavailable as error:
        raise CommandError(
            Exit.UNREACHABLE, f"{error}; is the {service} up? run `ferry status`, or `make up`"
        ) from None
    except httpx.TransportError as error:
        raise CommandError(
            Exit.UNREACHABLE,
            f"the {service} at {url} is unreachable ({error}); is it up? run `ferry status`, or `make up`",
        ) from None
    except RegistryBadAnswer as error:
        raise CommandError(Exit.FAILED, f"{error}; is {url} the {service}?") from None


def run_verb(action: Callable[[], int], *, err: TextIO | None = None) -> int:
    """Run a verb's body; a CommandError becomes its message on stderr and its exit code."""
    try:
        return action()
    except CommandError as error:
        print(f"ferry: {error.message}", file=err or sys.stderr)
        return int(error.code)


@dataclass(frozen=True)
class Table:
    """Rows for a person (a rich table) or a script (``--json``: the ``records``, all fields)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    records: Any


def emit(table: Table, *, as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:
        print(json.dumps(table.records, indent=2, default=str), file=out)
        return
    from rich.console import Console
    from rich.table import Table as RichTable

    # Piped, a table is as wide as its rows: a script or a pager never gets an ellipsis in place of a reason.
    width = None if out.isatty() else 400
    console = Console(file=out, width=width, highlight=False, soft_wrap=False)
    rendered = RichTable(title=table.title, title_justify="left", expand=False)
    for column in table.columns:
        rendered.add_column(column, overflow="fold")
    for row in table.rows:
        rendered.add_row(*("-" if cell is None else str(cell) for cell in row))
    console.print(rendered)


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
