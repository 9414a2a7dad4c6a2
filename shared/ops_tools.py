"""Day-to-day verbs beside the registry's: ``ferry alerts`` (the monitor), ``ferry logs`` (the local log files)
and ``ferry completion`` (shell completion, by shtab); and the parser of ``ferry predict`` (shared.predict_cli)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from shared.ops_common import (
    CommandError,
    Exit,
    Table,
    add_json_flag,
    emit,
    failures,
    monitor_url,
    run_verb,
)
from shared.predict_cli import run_predict
from shared.settings import FerrySettings

Command = Callable[[argparse.Namespace, FerrySettings], int]
LOCAL_LOGS = ("supervisord", "kafka", "postgres", "seaweedfs")
"""Logs beside the services' own under <home>/logs (shared.local writes them)."""


# --- alerts -----------------------------------------------------------------------------------------


def alerts_table(answer: dict[str, Any], *, recent: bool) -> Table:
    alerts = list(answer.get("active", [])) + (list(answer.get("recent", [])) if recent else [])
    rows = [
        (
            alert["state"],
            alert["rule"],
            " ".join(f"{key}={value}" for key, value in sorted(alert["labels"].items())),
            alert["value"],
            alert["threshold"],
            alert["action"],
            alert.get("fired_at") or alert.get("active_at"),
        )
        for alert in alerts
    ]
    columns = ("state", "rule", "labels", "value", "threshold", "action", "since")
    return Table("alerts" if alerts else "alerts: none active", columns, rows, alerts)


def show_alerts(
    url: str | None, *, as_json: bool, recent: bool = False, out: TextIO | None = None, http: Any = None
) -> int:
    """The monitor's ``/api/v1/alerts`` as a table or JSON: ``ferry alerts`` and ``ferry monitor alerts``
    (``http``: a client whose base URL is the monitor, a test's TestClient say)."""
    import httpx

    def run() -> int:
        base = (url or monitor_url()).rstrip("/")
        with failures("monitor", base):
            response = http.get("/api/v1/alerts") if http else httpx.get(f"{base}/api/v1/alerts", timeout=10)
        _check_monitor(response, base)
        emit(alerts_table(response.json(), recent=recent), as_json=as_json, out=out)
        return Exit.OK

    return run_verb(run)


def _check_monitor(response: Any, base: str) -> None:
    from shared.registry_errors import message_of

    if response.status_code >= 400:
        raise CommandError(
            Exit.FAILED, f"the monitor at {base} answered {response.status_code}: {message_of(response)}"
        )
    try:
        response.json()["active"]
    except (ValueError, KeyError, TypeError):
        raise CommandError(
            Exit.FAILED, f"{base} did not answer as the monitor does; is FERRY_MONITOR_URL right?"
        ) from None


def add_alerts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the monitor's URL (default: FERRY_MONITOR_URL, or its local port)")
    parser.add_argument("--recent", action="store_true", help="recently resolved alerts too")
    add_json_flag(parser)


# --- logs -------------------------------------------------------------------------------------------


def log_files(settings: FerrySettings, name: str | None) -> list[Path]:
    """``<home>/logs/NAME.log`` and its replicas' ``NAME-<k>.log`` (FERRY_REPLICAS), or every log there;
    NAME is one of the known names, never a path."""
    folder = settings.home.absolute() / "logs"
    if name is None:
        found = sorted(folder.glob("*.log"))
    else:
        replica = re.compile(rf"{re.escape(name)}(-\d+)?\.log")
        found = sorted(path for path in folder.glob(f"{name}*.log") if replica.fullmatch(path.name))
    if not found:
        wanted = f"{name}.log" if name else "log"
        raise CommandError(Exit.NOT_FOUND, f"no {wanted} file under {folder}: has `make up` run here?")
    return found


def run_logs(args: argparse.Namespace, settings: FerrySettings) -> int:
    def run() -> int:
        files = [str(path) for path in log_files(settings, args.service)]
        command = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *files]
        sys.stdout.flush()
        if not args.follow:
            import subprocess

            return subprocess.run(command, check=False).returncode
        os.execvp("tail", command)  # follows until Ctrl-C, as `make logs` did

    return run_verb(run)


# --- completion -------------------------------------------------------------------------------------


def run_completion(args: argparse.Namespace, settings: FerrySettings) -> int:
    import shtab

    from shared.cli import build_parser

    parser, _ = build_parser()
    print(shtab.complete(parser, shell=args.shell))
    return Exit.OK


def register(sub: Any) -> dict[str, Command]:
    """Add predict, alerts, logs and completion to the ``ferry`` parser's subparsers."""
    from shared.services import SERVICES

    predict = sub.add_parser(
        "predict", help="predict rows (CSV or JSON, a file or - for stdin) through the gateway: class or value"
    )
    predict.add_argument("model")
    predict.add_argument("file", help="a CSV or JSON file of rows, or - to read stdin")
    predict.add_argument(
        "--url", default=None, help="the gateway's URL (default: FERRY_GATEWAY_URL, or its local port)"
    )
    add_json_flag(predict)
    add_alerts_arguments(sub.add_parser("alerts", help="the monitor's active alerts"))
    logs = sub.add_parser("logs", help="follow a service's log under .ferry/logs (all of them without a name)")
    logs.add_argument("service", nargs="?", choices=[*(spec.name for spec in SERVICES), *LOCAL_LOGS])
    logs.add_argument("--lines", "-n", type=int, default=20, help="lines of the past to show first")
    logs.add_argument("--no-follow", dest="follow", action="store_false", help="print and exit")
    completion = sub.add_parser("completion", help="print a shell completion script: ferry completion bash")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    return {
        "predict": run_predict,
        "alerts": lambda args, settings: show_alerts(args.url, as_json=args.json, recent=args.recent),
        "logs": run_logs,
        "completion": run_completion,
    }
