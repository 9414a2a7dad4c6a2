"""Property-based fuzzing of the REST API from its own OpenAPI document: no input may yield a 5xx."""

from __future__ import annotations

import pytest
from fuzzing import fuzz_app
from test_registry_support import API_TOKEN, trained_event

from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from services.registry.handlers import handle_model_trained
from shared.envelope import EventMeta
from shared.events import new_id, utc_now

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def seed(registry: Registry) -> None:
    """A few versions, so that some generated requests find something."""
    for model in ("digits", "a", "0"):
        for _ in range(2):
            event = trained_event(model, store=registry.artifacts)
            meta = EventMeta(event_id=new_id(), source="t", time=utc_now(), traceparent=None, type_name=event.type_name)
            handle_model_trained(event, meta, uow=registry.uow(), artifacts=registry.artifacts)


def test_no_input_yields_a_server_error(registry: Registry) -> None:
    seed(registry)
    app = create_app(registry.settings, registry.api_deps())
    report = fuzz_app(app, headers={"Authorization": f"Bearer {API_TOKEN}"}, path_parameters={"name": "digits"})
    assert len(report.operations) >= 12
    assert {200, 404, 422} <= set(report.statuses)  # the requests reached found, missing and invalid paths
