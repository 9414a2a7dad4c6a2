"""``ferry register MODEL FILE.onnx --dataset NAME``: bring a model trained anywhere into Ferry.

The file goes to the registry's ``POST /api/v1/models/{name}/versions`` through the typed client, with the
operator's token. The registry checks it, stores it and announces it as ``model.trained`` (lineage
external); the verb then waits for the version it becomes (``--no-wait`` does not), and sets ``--tags`` on it.
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path
from typing import Any

from shared.ops_cli import Command, Connect
from shared.ops_cli import connect as ops_connect
from shared.ops_common import CommandError, Exit, add_json_flag, failures, registry_url, run_verb
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryNotFound
from shared.registry_models import UploadOut, VersionOut
from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for

WAIT_S = 60.0
UPLOAD_TIMEOUT_S = 300.0
"""The registry answers an upload once it has checked it (ONNX Runtime loads and runs it): longer than a read."""


def connect(settings: FerrySettings, write: bool) -> RegistryClient:
    """The day-to-day verbs' client, with a timeout that allows the registry's check of the file."""
    return ops_connect(settings, write, timeout_s=UPLOAD_TIMEOUT_S)


def register(sub: Any, connect: Connect = connect) -> dict[str, Command]:
    """Add ``ferry register`` to ``sub``; ``shared.cli`` calls it."""
    parser = sub.add_parser("register", help="register an ONNX model trained anywhere (checked by the registry)")
    parser.add_argument("model", help="model name")
    parser.add_argument("file", type=Path, help="the .onnx file")
    parser.add_argument("--dataset", required=True, help="the dataset it was trained for, e.g. sklearn:digits")
    parser.add_argument("--metrics", type=_metrics, default=None, help='JSON object of numbers: {"accuracy": 0.97}')
    parser.add_argument("--tags", nargs="+", type=_tag, default=[], metavar="K=V", help="tags of the new version")
    parser.add_argument("--no-wait", action="store_true", help="return once uploaded, before the version exists")
    add_json_flag(parser)

    def command(args: argparse.Namespace, settings: FerrySettings) -> int:
        def run() -> int:
            artifact = _read(args.file)
            client = connect(settings, True)
            try:
                with failures("registry", registry_url()):
                    return _register(client, args, artifact)
            finally:
                client.close()

        return run_verb(run)

    return {"register": command}


def _register(client: RegistryClient, args: argparse.Namespace, artifact: bytes) -> int:
    uploaded = client.register_artifact(args.model, artifact, dataset=args.dataset, metrics=args.metrics)
    if args.no_wait:
        if args.tags:
            raise CommandError(Exit.USAGE, "--tags needs the version: leave out --no-wait")
        _report(uploaded, None, as_json=args.json)
        return int(Exit.OK)
    version = _wait_for_version(client, uploaded)
    if args.tags:
        version = client.edit_version(args.model, version.version, tags=dict(args.tags))
    _report(uploaded, version, as_json=args.json)
    return int(Exit.OK)


def _wait_for_version(client: RegistryClient, uploaded: UploadOut) -> VersionOut:
    def registered() -> VersionOut | None:
        try:
            newest = list(islice(client.versions(uploaded.model_name, page_size=20), 20))
        except RegistryNotFound:  # the model's first version is not registered yet
            return None
        return next((found for found in newest if found.training_request_id == uploaded.request_id), None)

    try:
        return wait_for(registered, what=f"the version of upload {uploaded.request_id}", timeout_s=WAIT_S)
    except NotReady as error:
        raise CommandError(
            Exit.FAILED,
            f"{error}: the artifact is stored (sha256 {uploaded.artifact.sha256}) and announced; "
            "is the registry's consumer running? see `ferry status` and `ferry versions "
            f"{uploaded.model_name}`",
        ) from None


def _report(uploaded: UploadOut, version: VersionOut | None, *, as_json: bool) -> None:
    if as_json:
        record = uploaded.model_dump(mode="json") | {"version": version.version if version else None}
        print(json.dumps(record, indent=2))
        return
    shape = ", ".join(f"{spec.name} {spec.datatype} {spec.shape}" for spec in uploaded.signature.inputs)
    scores = ", ".join(f"{spec.name} {spec.datatype} {spec.shape}" for spec in uploaded.signature.outputs)
    print(f"stored sha256 {uploaded.artifact.sha256} ({uploaded.artifact.size_bytes} bytes): {shape} -> {scores}")
    if uploaded.rewritten:
        print("  kept only the probabilities output (Ferry's evaluator and gateway read the first output)")
    if version is None:
        print(f"announced as model.trained (request {uploaded.request_id}); the registry registers it shortly")
    else:
        print(f"{uploaded.model_name} version {version.version} registered; the evaluator judges it next")


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise CommandError(Exit.NOT_FOUND, f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise CommandError(Exit.FAILED, f"{path}: cannot be read ({error.strerror})") from None


def _metrics(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError('not JSON; e.g. {"accuracy": 0.97}') from None
    if not isinstance(value, dict) or not all(
        isinstance(number, int | float) and not isinstance(number, bool) for number in value.values()
    ):
        raise argparse.ArgumentTypeError('a JSON object of numbers, e.g. {"accuracy": 0.97}')
    return {str(key): float(number) for key, number in value.items()}


def _tag(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value
