"""Compression's rules and structured pruning's surgery, on untrained networks (no data, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from services.trainer.adapters.onnx_model import export_onnx, onnx_parameters, torch_probabilities, verify_export
from services.trainer.adapters.pruning import (
    chain_shapes,
    count_parameters,
    prunable_chain,
    prune_units,
    resize_like,
)
from services.trainer.adapters.torch_models import Classifier, build_classifier
from services.trainer.compression import (
    LayerShape,
    ModelFacts,
    aligned_width,
    chain_parameters,
    check_accuracy,
    choose_int8,
    compression_ratios,
    pruned_widths,
)
from services.trainer.domain import CompressionTooLossy, TrainingPlan
from shared.events import Hyperparameters
from shared.onnx import BatchLatency, Latency

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MLP_CHAIN = [LayerShape(64, 256, block=8), LayerShape(256, 128, block=8), LayerShape(128, 10, block=8)]


def _classifier(arch: str, hidden: list[int], seed: int = 0) -> Classifier:
    plan = TrainingPlan(
        arch=arch,
        num_features=64,
        num_classes=10,
        image_shape=(8, 8) if arch == "cnn" else None,
        hyperparameters=Hyperparameters(hidden_sizes=hidden),
    )
    rng = np.random.default_rng(seed)
    mean, std = rng.uniform(0, 8, 64).astype(np.float32), rng.uniform(1, 4, 64).astype(np.float32)
    return build_classifier(plan, mean, std, seed)


def _rows(count: int = 32) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 16, (count, 64)).astype(np.float32)


def _initializer_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    graph = onnx.load(str(path)).graph
    return {tensor.name: tuple(numpy_helper.to_array(tensor).shape) for tensor in graph.initializer}


def test_pruned_widths_remove_the_requested_share_of_parameters() -> None:
    full = chain_parameters(MLP_CHAIN, [256, 128])
    assert full == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    for fraction in (0.3, 0.5, 0.8):
        widths = pruned_widths(MLP_CHAIN, fraction)
        assert all(width % 8 == 0 for width in widths)
        assert chain_parameters(MLP_CHAIN, widths) / full == pytest.approx(1 - fraction, abs=0.03)


def test_convolution_channels_stay_multiples_of_the_cpu_block() -> None:
    cnn = [
        LayerShape(1, 16, weights_per_pair=9, block=16),
        LayerShape(16, 32, weights_per_pair=9, block=16),
        LayerShape(32, 256, inputs_per_unit=16, block=8),
        LayerShape(256, 128, block=8),
        LayerShape(128, 10, block=8),
    ]
    channels_one, channels_two, *_ = pruned_widths(cnn, 0.5)
    assert (channels_one, channels_two) == (16, 16)  # never 11 or 22: those fall off ORT's fast path


@pytest.mark.parametrize(
    ("width", "keep", "block", "expected"),
    [(256, 0.5, 8, 128), (256, 0.51, 8, 128), (100, 1.0, 8, 100), (16, 0.3, 16, 16), (6, 0.5, 8, 3), (5, 0.01, 8, 1)],
)
def test_aligned_width(width: int, keep: float, block: int, expected: int) -> None:
    assert aligned_width(width, keep, block) == expected


def p50s(batch1_ms: float, batch64_ms: float) -> Latency:
    """The harness's result with these p50s (p99 twice as high: the choice must read the p50)."""
    return Latency(BatchLatency(batch1_ms, 2 * batch1_ms, 100), BatchLatency(batch64_ms, 2 * batch64_ms, 50), 5)


def test_int8_is_chosen_by_latency_and_called_faster_only_when_faster_at_both_batches() -> None:
    fp32 = p50s(batch1_ms=0.010, batch64_ms=0.100)
    static, dynamic = p50s(0.012, 0.040), p50s(0.011, 0.080)
    assert choose_int8(fp32, {"int8-static": static, "int8-dynamic": dynamic}) == "int8-static"
    assert not static.faster_than(fp32)  # 2.5x faster at batch 64 is still slower at batch 1
    assert p50s(0.009, 0.090).faster_than(fp32)
    with pytest.raises(ValueError):
        choose_int8(fp32, {})


def test_ratios_compare_the_shipped_model_with_the_uncompressed_one() -> None:
    shipped = ModelFacts(val_accuracy=0.97, parameters=1_000, size_bytes=5_000, latency=p50s(0.01, 0.05))
    uncompressed = ModelFacts(val_accuracy=0.98, parameters=10_000, size_bytes=40_000, latency=p50s(0.02, 0.5))
    ratios = compression_ratios(shipped, uncompressed)
    assert ratios == {
        "parameter_ratio": 0.1,
        "size_ratio": 0.125,
        "latency_ratio_b1": 0.5,
        "latency_ratio_b64": 0.1,
        "val_accuracy_drop": pytest.approx(0.01),
    }
    check_accuracy(shipped, uncompressed, "the teacher", limit=0.02)
    with pytest.raises(CompressionTooLossy, match=r"0\.9700 is 0\.0100 below the teacher's 0\.9800 \(at most 0\.005"):
        check_accuracy(shipped, uncompressed, "the teacher", limit=0.005)


def test_structured_pruning_removes_hidden_units_from_the_exported_graph(tmp_path: Path) -> None:
    classifier = _classifier("mlp", [256, 128])
    outcome = prune_units(classifier, 0.5)
    assert outcome.widths_before == [256, 128] and outcome.widths_after == [168, 80]
    assert count_parameters(classifier) == outcome.parameters_after
    assert outcome.removed_fraction == pytest.approx(0.5, abs=0.03)
    path = export_onnx(classifier, tmp_path / "pruned.onnx")
    shapes = _initializer_shapes(path)
    assert shapes["classifier.body.0.weight"] == (168, 64)
    assert shapes["classifier.body.2.weight"] == (80, 168)
    assert shapes["classifier.body.4.weight"] == (10, 80)
    assert onnx_parameters(path) == outcome.parameters_after
    verify_export(classifier, path, _rows())


def test_structured_pruning_removes_channels_from_the_exported_cnn(tmp_path: Path) -> None:
    classifier = _classifier("cnn", [256, 128])
    prune_units(classifier, 0.5)
    path = export_onnx(classifier, tmp_path / "pruned.onnx")
    shapes = _initializer_shapes(path)
    assert shapes["classifier.body.features.0.weight"] == (16, 1, 3, 3)
    assert shapes["classifier.body.features.2.weight"] == (16, 16, 3, 3)  # 32 channels -> 16
    assert shapes["classifier.body.head.0.weight"][1] == 16 * 4 * 4  # 16 channels of 4x4 after pooling
    verify_export(classifier, path, _rows())


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_the_cut_computes_what_silencing_the_weakest_units_would(arch: str) -> None:
    """The pruned network equals the full one whose weakest units (by the L2 norm of their incoming
    weights from surviving units) are cut off from the next layer: the surgery keeps exactly those."""
    pruned = _classifier(arch, [64, 32])
    outcome = prune_units(pruned, 0.6)
    masked = _classifier(arch, [64, 32])
    layers = prunable_chain(masked)
    positions = [shape.inputs_per_unit for shape in chain_shapes(layers)]
    with torch.no_grad():
        for index, width in enumerate(outcome.widths_after):
            norms = layers[index].weight.flatten(start_dim=1).norm(dim=1)  # silenced inputs are zeros
            kept = set(torch.topk(norms, width).indices.tolist())
            for unit in set(range(len(norms))) - kept:
                span = slice(unit * positions[index + 1], (unit + 1) * positions[index + 1])
                layers[index + 1].weight[:, span] = 0.0
    assert outcome.widths_after != outcome.widths_before
    rows = _rows()
    np.testing.assert_allclose(torch_probabilities(pruned, rows), torch_probabilities(masked, rows), atol=1e-5)


def test_a_pruned_checkpoint_loads_into_a_network_shaped_by_it() -> None:
    pruned = _classifier("cnn", [64, 32])
    prune_units(pruned, 0.7)
    fresh = _classifier("cnn", [64, 32], seed=5)
    state = pruned.state_dict()
    resize_like(fresh, state)
    fresh.load_state_dict(state)
    rows = _rows()
    np.testing.assert_allclose(torch_probabilities(fresh, rows), torch_probabilities(pruned, rows), atol=1e-6)
