"""Property-based fuzzing of the REST API from its own OpenAPI document: no input may yield a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from test_registry_support import API_TOKEN, trained_event

from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from services.registry.handlers import handle_model_trained
from shared.envelope import EventMeta
from shared.events import new_id, utc_now

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]
MAX_EXAMPLES = 25


def seed(registry: Registry) -> None:
    """A few versions, so that some generated requests find something."""
    for model in ("digits", "a", "0"):
        for _ in range(2):
            event = trained_event(model, store=registry.artifacts)
            meta = EventMeta(event_id=new_id(), source="t", time=utc_now(), traceparent=None, type_name=event.type_name)
            handle_model_trained(event, meta, uow=registry.uow(), artifacts=registry.artifacts)


def test_no_input_yields_a_server_error(registry: Registry) -> None:
    seed(registry)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(registry.settings, registry.api_deps()))
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 12
    seen: list[int] = []
    for operation in operations:
        fuzz(operation, seen)
    assert {200, 404, 422} <= set(seen)  # the generated requests reached found, missing and invalid paths


def fuzz(operation: Any, seen: list[int]) -> None:
    """Up to MAX_EXAMPLES generated requests against one operation; any 5xx fails the test."""

    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    if "{name}" in operation.path:  # also aim at a model that exists, so the deeper code paths run
        strategies.append(operation.as_strategy(path_parameters={"name": "digits"}))

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers={"Authorization": f"Bearer {API_TOKEN}"}, checks=[not_a_server_error])
        seen.append(response.status_code)

    check()
