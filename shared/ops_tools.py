"""Day-to-day verbs beside the registry's: ``ferry predict`` (the gateway), ``ferry alerts`` (the monitor),
``ferry logs`` (the local log files) and ``ferry completion`` (shell completion, by shtab)."""

from __future__ import annotations

import argparse
import csv
import io
import json
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
    gateway_url,
    monitor_url,
    run_verb,
)
from shared.settings import FerrySettings

Command = Callable[[argparse.Namespace, FerrySettings], int]
LOCAL_LOGS = ("supervisord", "kafka", "postgres", "seaweedfs")
"""Logs beside the services' own under <home>/logs (shared.local writes them)."""


# --- predict ----------------------------------------------------------------------------------------


def read_rows(text: str) -> list[list[float]]:
    """Rows of numbers from CSV (a header line is skipped), a JSON array of rows, one row, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise CommandError(Exit.USAGE, "no rows: the input is empty")
    if stripped[0] in "[{":
        return _json_rows(stripped)
    rows = [row for row in csv.reader(io.StringIO(stripped)) if any(cell.strip() for cell in row)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    return [_row(row, number) for number, row in enumerate(rows, start=1)]


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _row(cells: list[Any], number: int) -> list[float]:
    try:
        return [float(cell) for cell in cells]
    except (TypeError, ValueError):
        raise CommandError(Exit.USAGE, f"row {number} is not all numbers: {str(cells)[:80]}") from None


def _json_rows(text: str) -> list[list[float]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON lines: one row per line
            document = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise CommandError(Exit.USAGE, f"not JSON rows: {error}") from None
    if isinstance(document, dict) and isinstance(document.get("rows"), list):
        document = document["rows"]
    if not isinstance(document, list) or not document:
        raise CommandError(Exit.USAGE, "JSON input must be an array of rows (arrays of numbers), or one row")
    if not isinstance(document[0], list):
        document = [document]  # one row
    return [_row(row if isinstance(row, list) else [row], number) for number, row in enumerate(document, start=1)]


def _read_input(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.is_file():
        raise CommandError(Exit.NOT_FOUND, f"no file {source}: give a CSV or JSON file of rows, or - for stdin")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(Exit.USAGE, f"cannot read {source}: {error}") from None


def predictions(http: Any, model: str, rows: list[list[float]]) -> list[dict[str, Any]]:
    """One OIP v2 request per row (each row is routed on its own); what answered, and how."""
    from shared.registry_errors import message_of, model_path

    path = f"/v2{model_path(model)}"
    metadata = http.get(path)
    if metadata.status_code == 404:
        raise CommandError(Exit.NOT_FOUND, f"the gateway serves no model {model!r}: {message_of(metadata)}")
    _check(metadata, "metadata")
    described = metadata.json()["inputs"][0]
    found = []
    for number, row in enumerate(rows, start=1):
        tensor = {"name": described["name"], "shape": [1, len(row)], "datatype": described["datatype"], "data": row}
        answer = http.post(f"{path}/infer", json={"inputs": [tensor]})
        _check(answer, f"row {number}")
        body = answer.json()
        scores = [float(value) for value in body["outputs"][0]["data"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        found.append(
            {
                "row": number,
                "class": best,
                "score": scores[best],
                "model_version": int(body["model_version"]),
                "route": answer.headers.get("x-ferry-route"),
            }
        )
    return found


def _check(response: Any, what: str) -> None:
    from shared.registry_errors import message_of

    if response.status_code >= 400:
        code = Exit.UNREACHABLE if response.status_code in (502, 503, 504) else Exit.FAILED
        raise CommandError(code, f"the gateway refused {what} ({response.status_code}): {message_of(response)}")


def predictions_table(model: str, found: list[dict[str, Any]]) -> Table:
    rows = [(p["row"], p["class"], f"{p['score']:.4f}", f"v{p['model_version']}", p["route"]) for p in found]
    return Table(f"predictions of {model}", ("row", "class", "score", "version", "route"), rows, found)


def run_predict(args: argparse.Namespace, settings: FerrySettings, http: Any = None) -> int:
    import httpx

    def run() -> int:
        rows = read_rows(_read_input(args.file))
        url = args.url or gateway_url()
        client = http or httpx.Client(base_url=url, timeout=30.0)
        try:
            with failures("gateway", url):
                found = predictions(client, args.model, rows)
        finally:
            if http is None:
                client.close()
        emit(predictions_table(args.model, found), as_json=args.json)
        return Exit.OK

    return run_verb(run)


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

    predict = sub.add_parser("predict", help="classify rows (CSV or JSON, a file or - for stdin) through the gateway")
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
