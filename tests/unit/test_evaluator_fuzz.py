"""Property-based fuzzing of the evaluator's HTTP face from its own OpenAPI document: no input may yield a 5xx."""

from __future__ import annotations

from fuzzing import fuzz_app

from services.evaluator.domain.rollout import Bake, BakeBook
from services.evaluator.entrypoints.api import create_app


def test_no_input_to_the_evaluator_yields_a_server_error() -> None:
    bakes = BakeBook()
    bakes.schedule(Bake("digits", 2, 1_000.0))
    app = create_app(bakes, clock=lambda: 990.0)
    report = fuzz_app(app)
    assert {"GET /healthz", "GET /readyz", "GET /api/v1/bakes", "GET /metrics"} <= set(report.operations)
    assert set(report.statuses) == {200}
