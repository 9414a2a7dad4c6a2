"""``ferry predict MODEL FILE``: rows from CSV or JSON, one OIP v2 request each through the gateway; per row the
class with its name and probability (a classifier's, with the class names of the version that answered) or the
predicted value (a regressor's), the version that answered and the route."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from shared.ops_common import CommandError, Exit, Table, emit, failures, gateway_url, run_verb
from shared.settings import FerrySettings

TOP_CLASSES = 3
"""Classes a table row names with their probabilities, best first (--json gives every class's)."""


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


class _ClassNames:
    """The class names of each version that answers, from its OIP metadata (``parameters.labels`` of the first
    output), asked once per version: a canary may have been trained on a dataset that names its classes anew."""

    def __init__(self, http: Any, path: str) -> None:
        self._http = http
        self._path = path
        self._known: dict[int, list[str] | None] = {}

    def of(self, version: int) -> list[str] | None:
        if version not in self._known:
            answer = self._http.get(f"{self._path}/versions/{version}")
            _check(answer, f"v{version}'s metadata")
            outputs = answer.json().get("outputs") or [{}]
            labels = (outputs[0].get("parameters") or {}).get("labels")
            self._known[version] = [str(label) for label in labels] if isinstance(labels, list) else None
        return self._known[version]


def predictions(http: Any, model: str, rows: list[list[float]]) -> list[dict[str, Any]]:
    """One OIP v2 request per row (each row is routed on its own); what answered, and how."""
    from shared.registry_errors import message_of, model_path

    path = f"/v2{model_path(model)}"
    metadata = http.get(path)
    if metadata.status_code == 404:
        raise CommandError(Exit.NOT_FOUND, f"the gateway serves no model {model!r}: {message_of(metadata)}")
    _check(metadata, "metadata")
    described = metadata.json()["inputs"][0]
    names = _ClassNames(http, path)
    found = []
    for number, row in enumerate(rows, start=1):
        tensor = {"name": described["name"], "shape": [1, len(row)], "datatype": described["datatype"], "data": row}
        answer = http.post(f"{path}/infer", json={"inputs": [tensor]})
        _check(answer, f"row {number}")
        body = answer.json()
        version = int(body["model_version"])
        outputs = [float(value) for value in body["outputs"][0]["data"]]
        # One value for the row is a regressor's prediction: a classifier scores two classes or more.
        predicted = {"value": outputs[0]} if len(outputs) == 1 else _classified(outputs, names.of(version))
        found.append(
            {"row": number, **predicted, "model_version": version, "route": answer.headers.get("x-ferry-route")}
        )
    return found


def _classified(scores: list[float], labels: list[str] | None) -> dict[str, Any]:
    """The best class, its name (None when the version's classes have none) and score, and every class's."""
    best = max(range(len(scores)), key=scores.__getitem__)
    names = labels if labels is not None and len(labels) == len(scores) else None
    keys = names or [str(index) for index in range(len(scores))]
    label = names[best] if names else None
    return {"class": best, "label": label, "score": scores[best], "probabilities": dict(zip(keys, scores, strict=True))}


def _check(response: Any, what: str) -> None:
    from shared.registry_errors import message_of

    if response.status_code >= 400:
        code = Exit.UNREACHABLE if response.status_code in (502, 503, 504) else Exit.FAILED
        raise CommandError(code, f"the gateway refused {what} ({response.status_code}): {message_of(response)}")


def predictions_table(model: str, found: list[dict[str, Any]]) -> Table:
    """A regressor's rows give their value; a classifier's the class (and its name) and the best classes'
    probabilities, each by name."""
    rows: list[tuple[Any, ...]]
    if all("value" in p for p in found):
        rows = [(p["row"], f"{p['value']:.4f}", f"v{p['model_version']}", p["route"]) for p in found]
        return Table(f"predictions of {model}", ("row", "value", "version", "route"), rows, found)
    rows = [(p["row"], *_class_cells(p), f"v{p['model_version']}", p["route"]) for p in found]
    return Table(f"predictions of {model}", ("row", "class", "probabilities", "version", "route"), rows, found)


def _class_cells(prediction: dict[str, Any]) -> tuple[str, str]:
    if "value" in prediction:  # a regressor's answer among a classifier's (a version of another task): its value
        return f"value {prediction['value']:.4f}", "-"
    named = f"{prediction['class']} {prediction['label']}" if prediction["label"] else str(prediction["class"])
    ranked = sorted(prediction["probabilities"].items(), key=lambda item: -item[1])[:TOP_CLASSES]
    return named, ", ".join(f"{name} {probability:.4f}" for name, probability in ranked)


def run_predict(args: argparse.Namespace, settings: FerrySettings, http: Any = None) -> int:
    """``ferry predict``: the rows of ``args.file`` through the gateway, as a table or JSON."""
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
