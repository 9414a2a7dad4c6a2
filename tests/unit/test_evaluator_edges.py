"""The evaluator's edges without a network: its reading of the registry over a mock transport, the HTTP face."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.evaluator.adapters.registry import RegistryRecords
from services.evaluator.domain.rollout import Bake, BakeBook
from services.evaluator.entrypoints.api import create_app
from shared.errors import PermanentError, TransientError
from shared.registry_client import RegistryClient, RetryBudget
from shared.runtime import Runtime
from shared.waiting import wait_for

NOW = "2026-01-01T00:00:00Z"
VERSION = {
    "model_name": "digits",
    "version": 2,
    "status": "registered",
    "dataset": "sklearn:digits",
    "split_id": "s",
    "artifact": {"uri": "/x", "sha256": "b" * 64, "size_bytes": 10, "format": "onnx-int8"},
    "signature": {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], "outputs": []},
    "compression": {"quantize": "int8", "prune": None, "distill_from": None},
    "metrics": {},
    "arch": "mlp",
    "hyperparameters": {},
    "timings": {},
    "training_request_id": None,
    "parent_model": None,
    "parent_version": None,
    "source_event_id": None,
    "tags": {},
    "created_at": NOW,
    "updated_at": NOW,
}
MODEL = {"description": "", "tags": {}, "latest_version": 1, "champion": None, "challenger": None}
HISTORY = {
    "items": [
        {
            "revision": 2,
            "action": "promote",
            "from_champion": 1,
            "to_champion": 1,
            "from_challenger": None,
            "to_challenger": 2,
            "from_canary_weight": 0.0,
            "to_canary_weight": 0.1,
            "shadow": False,
            "actor": "evaluator",
            "reason": "r",
            "source_event_id": None,
            "created_at": NOW,
            "forced": False,
        }
    ],
    "next_cursor": None,
}


def client(answer: Any) -> RegistryRecords:
    transport = httpx.MockTransport(answer)
    budget = RetryBudget(attempts=2)
    return RegistryRecords(
        RegistryClient.connect("http://registry", transport=transport, budget=budget, sleep=lambda s: None)
    )


def test_the_registry_is_read_as_records_through_every_page_of_models() -> None:
    pages = {
        None: {"items": [{**MODEL, "name": "a", "created_at": NOW, "updated_at": NOW}], "next_cursor": "c1"},
        "c1": {"items": [{**MODEL, "name": "b", "created_at": NOW, "updated_at": NOW}], "next_cursor": None},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/models":
            return httpx.Response(200, json=pages[request.url.params.get("cursor")])
        if path.endswith("/versions/2"):
            return httpx.Response(200, json=VERSION)
        if path.endswith("/deployment/history"):
            return httpx.Response(200, json=HISTORY)
        return httpx.Response(404, json={"error": "model 'x' is not registered"})

    registry = client(answer)
    record = registry.version("digits", 2)
    assert record is not None and record.compressed and record.artifact.format == "onnx-int8"
    assert registry.version("digits", 3) is None and registry.deployment("nope") is None
    [entry] = registry.history("digits")
    assert (entry.to_challenger, entry.actor, entry.created_at.year) == (2, "evaluator", 2026)
    assert registry.model_names() == ["a", "b"]
    assert registry.evaluations("nope", 1) == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda request: httpx.Response(503, json={"error": "database"}), TransientError),
        (lambda request: httpx.Response(429), TransientError),
        (lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")), TransientError),
        (lambda request: httpx.Response(422, json={"error": "bad"}), PermanentError),
    ],
)
def test_a_registry_that_is_away_is_transient_and_a_refusal_permanent(answer: Any, error: type) -> None:
    with pytest.raises(error):
        client(answer).deployment("digits")


def test_the_http_face_tells_health_readiness_and_pending_bakes() -> None:
    bakes = BakeBook()
    bakes.schedule(Bake("digits", 2, 1_000.0))
    state = {"ready": False}
    release = threading.Event()
    runtime = Runtime("evaluator", readiness={"bakes": lambda: state["ready"]})
    runtime.worker("bakes", release.wait)  # a worker that ends while the service should run
    app = create_app(bakes, runtime, clock=lambda: 990.0)
    with TestClient(app) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 503
        state["ready"] = True
        assert http.get("/readyz").json() == {"status": "ready", "checks": {"bakes": True}}
        release.set()
        wait_for(lambda: runtime.failure is not None, what="the worker's end to be noticed", timeout_s=10)
        assert http.get("/healthz").json()["error"] == "worker bakes ended unexpectedly"
        assert http.get("/readyz").status_code == 503
        [pending] = http.get("/api/v1/bakes").json()
        assert (pending["model_name"], pending["version"], pending["due_in_s"]) == ("digits", 2, 10.0)
        assert http.get("/metrics").status_code == 200
