"""Property-based fuzzing of an HTTP API from its own OpenAPI document (schemathesis): no input may yield
a 5xx. The registry's, the monitor's and the evaluator's fuzz tests share it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

MAX_EXAMPLES = 25


@dataclass
class FuzzReport:
    operations: list[str] = field(default_factory=list)
    """``METHOD /path`` of every operation fuzzed."""
    statuses: list[int] = field(default_factory=list)
    """The status code of every generated request, in order."""


def fuzz_app(
    app: Any,
    *,
    headers: Mapping[str, str] | None = None,
    path_parameters: Mapping[str, str] | None = None,
    max_examples: int = MAX_EXAMPLES,
) -> FuzzReport:
    """Fuzz every operation of ``app`` (an ASGI app serving ``/openapi.json``); any 5xx fails the test.

    ``headers`` go with every request (a credential, so that the generated bodies get past it);
    ``path_parameters`` also aim operations whose path names them at values that exist, so that the
    deeper code paths run.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        report.operations.append(f"{operation.method.upper()} {operation.path}")
        fuzz_operation(
            operation, report.statuses, headers=dict(headers or {}), aim=path_parameters or {}, examples=max_examples
        )
    return report


def fuzz_operation(
    operation: Any, seen: list[int], *, headers: dict[str, str], aim: Mapping[str, str], examples: int
) -> None:
    """Up to ``examples`` generated requests against one operation, positive and negative alike."""
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    aimed = {name: value for name, value in aim.items() if f"{{{name}}}" in operation.path}
    if aimed:
        strategies.append(operation.as_strategy(path_parameters=aimed))

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
        seen.append(response.status_code)

    check()
