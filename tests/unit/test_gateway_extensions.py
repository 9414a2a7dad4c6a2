"""Triton's model configuration and statistics as the gateway builds them, without a server."""

from __future__ import annotations

from services.gateway.domain import BatchConfig, VersionSpec
from services.gateway.entrypoints.triton import model_config
from services.gateway.sample_models import classifier_signature
from services.gateway.statistics import InferenceStatistics
from shared.events import Signature, TensorSpec


def test_a_batchable_model_leaves_the_batch_axis_out_of_dims() -> None:
    spec = VersionSpec(3, "0" * 64, 10, classifier_signature(8, 3))
    config = model_config("iris", spec, BatchConfig(max_batch_size=32, max_delay_ms=1.5))
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [8]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 1500}


def test_a_model_without_a_batch_axis_has_max_batch_size_zero_and_full_dims() -> None:
    signature = Signature(
        inputs=[TensorSpec(name="x", datatype="INT64", shape=[4, 2])],
        outputs=[TensorSpec(name="y", datatype="FP64", shape=[4])],
    )
    config = model_config("fixed", VersionSpec(1, "0" * 64, 10, signature), BatchConfig(max_batch_size=64))
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"] == [{"name": "x", "data_type": "TYPE_INT64", "dims": [4, 2]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP64", "dims": [4]}]


def test_statistics_add_up_per_version() -> None:
    statistics = InferenceStatistics()
    statistics.finished("iris", 1, ok=True, rows=4, seconds=0.002)
    statistics.finished("iris", 1, ok=False, rows=1, seconds=0.001)
    statistics.executed("iris", 1, requests=2, queued_s=0.0005, run_s=0.001)
    [entry] = statistics.report([("iris", 1)])["model_stats"]
    assert (entry["name"], entry["version"], entry["inference_count"], entry["execution_count"]) == ("iris", "1", 4, 1)
    stats = entry["inference_stats"]
    assert stats["success"] == {"count": 1, "ns": 2_000_000}
    assert stats["fail"] == {"count": 1, "ns": 1_000_000}
    assert stats["queue"] == {"count": 2, "ns": 500_000}
    assert stats["compute_infer"]["count"] == 2
    assert statistics.report([("iris", 2)])["model_stats"][0]["inference_count"] == 0
