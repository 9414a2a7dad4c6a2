"""The gateway's loader: a warmed-up model on the provider it reports, or LoadFailed with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.adapters.onnx_runtime import LoadFailed, OnnxLoader
from services.gateway.sample_models import INPUT, classifier_bytes, classifier_signature, reference_probabilities
from shared.onnx import CPU


def test_a_version_loads_on_the_cpu_says_so_and_answers_like_onnx_runtime() -> None:
    model = OnnxLoader(device="cpu").load(classifier_bytes(8, 3), classifier_signature(8, 3), warmup_batches=(1, 4))
    rows = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    assert model.provider == CPU and model.input_names == [INPUT]
    np.testing.assert_allclose(model.run({INPUT: rows})[0], reference_probabilities(classifier_bytes(8, 3), rows))
    model.close()
    with pytest.raises(RuntimeError, match="released"):
        model.run({INPUT: rows})


def test_a_graph_unlike_its_registered_signature_is_refused_with_both() -> None:
    with pytest.raises(LoadFailed, match=r"is not the registered \[\('input', 'FP32', \[-1, 9\]\)\]"):
        OnnxLoader(device="cpu").load(classifier_bytes(8, 3), classifier_signature(9, 3))


def test_bytes_that_are_no_model_are_refused_without_quoting_them() -> None:
    with pytest.raises(LoadFailed, match="not an ONNX model") as refused:
        OnnxLoader(device="cpu").load(b"SECRET-TOKEN \xff\xfe not onnx", classifier_signature(8, 3))
    assert "SECRET" not in str(refused.value)
