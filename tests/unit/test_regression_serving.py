"""A regressor served and watched: the gateway counts its predicted values by drift bin (nothing assumes an
arg-max), refuses classification of its output with a 400, compares shadows by bin; the monitor's PSI then
compares those live bins with the evaluator's held-out reference, as it does a classifier's classes."""

from __future__ import annotations

import numpy as np
import pytest

from services.evaluator.domain.metrics import regression_quality
from services.gateway.adapters.metrics import GatewayMetrics
from services.gateway.domain import InvalidInput
from services.gateway.entrypoints.oip import RequestedOutput, select_outputs
from services.gateway.service import _agreed
from services.monitor.adapters.registry import reference_of
from services.monitor.domain.drift import psi, shares
from shared.events import Signature, TensorSpec
from shared.regression import quantile_edges

RNG = np.random.default_rng(3)
HELD_OUT = RNG.normal(150, 60, size=2000)
EDGES = quantile_edges(HELD_OUT[:500])  # the trainer's: validation predictions
REGRESSOR = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 10])],
    outputs=[TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])],
).regressor(EDGES)


def _metrics() -> GatewayMetrics:
    return GatewayMetrics(inflight=lambda: 0, queue_depths=lambda: [])


def _live_counts(metrics: GatewayMetrics) -> dict[str, float]:
    return {labels[2]: count for labels, count in metrics.counters["predictions"].items()}


def test_the_gateway_counts_a_regressors_predictions_by_drift_bin_for_both_output_shapes() -> None:
    metrics = _metrics()
    column = np.array([[EDGES[0] - 100], [EDGES[0]], [EDGES[-1] + 1]], dtype=np.float32)
    metrics.predicted("diabetes", 1, column, REGRESSOR)
    metrics.predicted("diabetes", 1, column[:, 0], REGRESSOR)  # a [batch] output counts the same way
    assert _live_counts(metrics) == {"0": 4, str(len(EDGES)): 2}


def test_a_regressor_without_bins_counts_nothing_rather_than_one_false_class() -> None:
    metrics = _metrics()
    unbinned = Signature(inputs=REGRESSOR.inputs, outputs=REGRESSOR.outputs, task="regression")
    metrics.predicted("diabetes", 1, np.ones((5, 1), dtype=np.float32), unbinned)
    assert _live_counts(metrics) == {}


def test_classification_of_a_regressors_output_is_refused() -> None:
    values = [np.array([[151.0], [99.5]], dtype=np.float32)]
    with pytest.raises(InvalidInput, match="the model is a regressor"):
        select_outputs(["prediction"], values, [RequestedOutput("prediction", False, 1)], False, None, regressor=True)
    [(name, array, _)] = select_outputs(["prediction"], values, [RequestedOutput("prediction", False, None)], False)
    assert name == "prediction" and array.tolist() == [[151.0], [99.5]]


def test_a_shadow_regressor_agrees_with_the_answer_when_both_fall_in_the_same_bin() -> None:
    answer = np.array([[EDGES[0] - 5], [EDGES[3] + 0.1], [EDGES[5]]], dtype=np.float32)
    shadow = np.array([[EDGES[0] - 50], [EDGES[3] + 0.2], [EDGES[7] + 1]], dtype=np.float32)
    assert _agreed(shadow, answer, REGRESSOR) == 2
    classifier = Signature(inputs=REGRESSOR.inputs, outputs=[TensorSpec(name="p", datatype="FP32", shape=[-1, 2])])
    assert _agreed(np.array([[0.9, 0.1]]), np.array([[0.6, 0.4]]), classifier) == 1


def test_psi_of_live_bins_against_the_evaluators_reference_sees_a_shift() -> None:
    section = regression_quality(HELD_OUT[500:], HELD_OUT[500:], REGRESSOR.bin_edges)
    reference = reference_of([{"candidate": {"prediction_distribution": section["prediction_distribution"]}}])
    assert reference is not None and len(reference) == len(EDGES) + 1
    steady, shifted = _metrics(), _metrics()
    steady.predicted("diabetes", 1, RNG.normal(150, 60, size=(3000, 1)), REGRESSOR)
    shifted.predicted("diabetes", 1, RNG.normal(230, 60, size=(3000, 1)), REGRESSOR)
    assert psi(shares(_live_counts(steady)), reference) < 0.05
    assert psi(shares(_live_counts(shifted)), reference) > 0.5
