"""``ferry demo``: the whole loop on one machine.

Brings the system up exactly as ``make up`` does (the stack, the generated API token, every installed
service under supervisord), proves a Kafka round trip, publishes a training request and follows it
until the registry holds the new version, then shows what the registry knows. Everything keeps
running afterwards (``make status``, ``make down``) unless ``--down`` is given.
"""

from __future__ import annotations

import json
import os
from argparse import Namespace
from typing import Any

import httpx

from shared.services import installed_services, service
from shared.settings import FerrySettings


def get_json(url: str) -> Any:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def post_json(url: str, body: dict[str, object], token: str) -> Any:
    response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if response.status_code >= 400:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text}")
    return response.json()


def demo_token(settings: FerrySettings) -> str:
    """The operator's token from the tokens file ``make up`` generated (never a well-known one)."""
    from shared.tokens import ensure_tokens_file, operator_token

    return operator_token(ensure_tokens_file(settings).path)


def registry_url() -> str:
    return os.environ.get("FERRY_REGISTRY_URL") or service("registry").url()


def run_demo(settings: FerrySettings, *, down_after: bool = False) -> int:
    """The whole loop; returns the process exit code."""
    from shared.cli import main as ferry
    from shared.system import down, up

    try:
        print("1. the whole system, as `make up`: Kafka, PostgreSQL, the API token, the services")
        if up(settings) != 0:
            return 1
        print("2. a Kafka round trip through the CloudEvents envelope")
        if ferry(["roundtrip"]) != 0:
            return 1
        return _train_and_inspect(settings, [spec.name for spec in installed_services()])
    finally:
        if down_after:
            down(settings)
        else:
            print("Ferry keeps running: `make status` shows it, `make down` stops it; logs in", settings.home / "logs")


def _train_and_inspect(settings: FerrySettings, services: list[str]) -> int:
    from shared.cli import main as ferry

    if not {"registry", "trainer"} <= set(services):
        print("the registry and trainer are not installed: the loop stops here")
        return 0
    registry = registry_url()
    print("3. ferry train --model digits --dataset sklearn:digits --wait")
    code = ferry(["train", "--model", "digits", "--dataset", "sklearn:digits", "--epochs", "40", "--wait"])
    if code != 0:
        return code
    print("4. what the registry now knows (newest version)")
    newest = get_json(f"{registry}/api/v1/models/digits/versions?limit=1")["items"][0]
    print(json.dumps({key: newest[key] for key in ("version", "status", "artifact", "metrics")}, indent=2))
    if "evaluator" not in services:
        print(f"5. no evaluator: promote version {newest['version']} by hand, with the operator's generated token")
        body = {"action": "promote", "version": newest["version"], "stage": "champion", "reason": "ferry demo"}
        post_json(f"{registry}/api/v1/models/digits/deployment", body, demo_token(settings))
    print(json.dumps(get_json(f"{registry}/api/v1/models/digits/deployment"), indent=2))
    history = get_json(f"{registry}/api/v1/models/digits/deployment/history?limit=3")
    print(json.dumps(history["items"][:1], indent=2))
    return 0


def demo_command(args: Namespace, settings: FerrySettings) -> int:
    return run_demo(settings, down_after=args.down)
