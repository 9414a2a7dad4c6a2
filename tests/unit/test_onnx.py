"""shared.onnx: sessions and their provider, the signature as loaded, batched scoring, the latency harness."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import NodeProto, TensorProto, ValueInfoProto, helper

from shared.onnx import (
    CPU,
    CUDA,
    BatchLatency,
    Latency,
    LatencyPlan,
    ModelUnloadable,
    choose_providers,
    gpu_present,
    measure_latency,
    open_session,
    predict,
    provider_in_use,
    signature_of,
    summarise,
)
from tests.evaluator_onnx import softmax_classifier

RNG = np.random.default_rng(0)
WEIGHTS, BIAS = RNG.normal(size=(8, 3)), RNG.normal(size=3)
MODEL = softmax_classifier(WEIGHTS, BIAS, input_name="features", output_name="scores")
ROWS = RNG.normal(size=(50, 8)).astype(np.float32)


def expected_scores(rows: np.ndarray) -> np.ndarray:
    logits = rows.astype(np.float64) @ WEIGHTS + BIAS
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def graph_bytes(node: NodeProto, inputs: list[ValueInfoProto], outputs: list[ValueInfoProto]) -> bytes:
    model = helper.make_model(
        helper.make_graph([node], "graph", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model.SerializeToString()


def test_a_cpu_session_runs_the_model_and_says_it_is_on_the_cpu() -> None:
    session = open_session(MODEL)
    assert provider_in_use(session) == CPU
    assert choose_providers("cpu") == [CPU]
    [scores] = session.run(None, {"features": ROWS})
    np.testing.assert_allclose(scores, expected_scores(ROWS), rtol=1e-5, atol=1e-6)


def test_cuda_is_asked_for_first_and_the_session_reports_what_it_really_got() -> None:
    asked = choose_providers("cuda")
    if CUDA in ort.get_available_providers():
        assert asked == [(CUDA, {"use_tf32": "0"}), CPU]
    else:
        assert asked == [CPU]
    if not gpu_present():
        assert choose_providers("auto") == [CPU]
        # onnxruntime-gpu lists CUDA on a machine without a GPU; the session falls back, and says so.
        assert provider_in_use(open_session(MODEL, device="cuda")) == CPU


def test_the_signature_is_read_with_names_datatypes_and_a_dynamic_batch() -> None:
    signature = signature_of(open_session(MODEL))
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.inputs] == [("features", "FP32", [-1, 8])]
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.outputs] == [("scores", "FP32", [-1, 3])]


def test_fixed_shapes_and_other_datatypes_are_read_as_they_are() -> None:
    model = graph_bytes(
        helper.make_node("Cast", ["ids"], ["wide"], to=TensorProto.DOUBLE),
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info("wide", TensorProto.DOUBLE, [2, 5])],
    )
    signature = signature_of(open_session(model))
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.inputs] == [("ids", "INT64", [2, 5])]
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.outputs] == [("wide", "FP64", [2, 5])]


def test_predict_scores_every_row_in_batches() -> None:
    scores = predict(open_session(MODEL), ROWS, batch=7)  # 50 rows: 7 full batches and one of 1
    assert scores.shape == (50, 3)
    np.testing.assert_allclose(scores, expected_scores(ROWS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"SECRET-CONTENT is not a protobuf \xff\xfe", "not an ONNX model"),
    ],
)
def test_bad_bytes_get_a_clear_error_that_quotes_none_of_them(data: bytes, reason: str) -> None:
    with pytest.raises(ModelUnloadable, match=reason) as refused:
        open_session(data)
    assert "SECRET" not in str(refused.value)


def test_a_graph_with_an_unknown_operator_is_refused_without_its_names() -> None:
    model = graph_bytes(
        helper.make_node("NoSuchOpSECRET", ["x"], ["y"], name="node-SECRET"),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ModelUnloadable, match="cannot load the model") as refused:
        open_session(model)
    assert "SECRET" not in str(refused.value)


def test_the_harness_makes_the_runs_it_claims_for_every_model() -> None:
    plan = LatencyPlan(runs=60, rounds=3, warmup_runs=2, budget_s=60.0)
    sessions = [open_session(MODEL), open_session(softmax_classifier(WEIGHTS * 2, BIAS))]
    found = measure_latency(sessions, ROWS, plan)
    assert len(found) == 2
    for latency in found:
        assert latency.rounds == 3
        assert latency.b1.runs == 3 * plan.runs_per_round(1) == 60
        assert latency.b64.runs == 3 * plan.runs_per_round(64) == 30
        for batch in (latency.b1, latency.b64):
            assert 0 < batch.p50_ms <= batch.p99_ms


def test_a_spent_budget_still_leaves_the_minimum_runs_in_every_round() -> None:
    [latency] = measure_latency([open_session(MODEL)], ROWS, LatencyPlan(runs=1000, rounds=2, budget_s=0.0))
    assert (latency.b1.runs, latency.b64.runs, latency.rounds) == (20, 20, 2)


def test_the_harness_refuses_a_session_whose_work_its_clock_would_miss() -> None:
    with pytest.raises(ValueError, match="one thread"):
        measure_latency([open_session(MODEL, threads=2)], ROWS, LatencyPlan(runs=10, rounds=1))


def test_p50_pools_every_run_and_p99_is_the_best_rounds() -> None:
    steady, hiccup = [1_000_000] * 100, [1_000_000] * 90 + [50_000_000] * 10
    latency = summarise({1: [hiccup, steady, hiccup], 64: [[2_000_000] * 10] * 3})
    assert (latency.b1.p50_ms, latency.b1.p99_ms, latency.b1.runs) == (pytest.approx(1.0), pytest.approx(1.0), 300)
    assert latency.b64.p99_ms == pytest.approx(2.0) and latency.rounds == 3
    slower = summarise({1: [hiccup] * 3, 64: [[2_000_000] * 10] * 3})
    assert slower.b1.p99_ms == pytest.approx(50.0)  # slow in every round: really slow


def test_p99_is_never_under_p50_when_one_round_was_faster_than_the_rest() -> None:
    fast, slow = [1_000_000] * 100, [3_000_000] * 100  # the machine's load fell during one round only
    latency = summarise({1: [fast, slow, slow], 64: [[2_000_000] * 10] * 3})
    assert latency.b1.p50_ms == pytest.approx(3.0)
    assert latency.b1.p99_ms == pytest.approx(3.0)  # not the fast round's 1.0


def test_latency_metrics_names_ratios_and_faster() -> None:
    fp32 = Latency(BatchLatency(0.02, 0.05, 100), BatchLatency(0.2, 0.5, 50), rounds=5)
    int8 = Latency(BatchLatency(0.01, 0.04, 100), BatchLatency(0.25, 0.3, 50), rounds=5)
    assert int8.metrics("int8_") == {
        "int8_latency_b1_p50_ms": 0.01,
        "int8_latency_b1_p99_ms": 0.04,
        "int8_latency_b64_p50_ms": 0.25,
        "int8_latency_b64_p99_ms": 0.3,
    }
    assert fp32.counts() == {"latency_b1_runs": 100, "latency_b64_runs": 50, "latency_rounds": 5}
    assert int8.p50_ratios(fp32) == pytest.approx((0.5, 1.25))
    assert not int8.faster_than(fp32)  # faster at batch 1 only
    assert Latency(int8.b1, BatchLatency(0.1, 0.3, 50), 5).faster_than(fp32)
