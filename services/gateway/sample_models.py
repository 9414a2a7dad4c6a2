"""Small ONNX classifiers built with ``onnx.helper``, shaped like the trainer's exports (``input`` FP32
[-1, features] → ``probabilities`` FP32 [-1, classes]): for tests, ``bench/`` and the GPU check, which
need real models in a second and must not train one."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.events import Signature, TensorSpec
from shared.onnx import open_session

INPUT, OUTPUT = "input", "probabilities"


def classifier_bytes(features: int = 64, classes: int = 10, *, seed: int = 0, hidden: int = 0) -> bytes:
    """A softmax classifier (one hidden ReLU layer of ``hidden`` units when > 0); ``seed`` picks its weights,
    so two seeds give two versions that disagree on some inputs."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current, width = INPUT, features
    if hidden:
        initializers += [
            numpy_helper.from_array(rng.normal(0, 0.3, (width, hidden)).astype(np.float32), "w0"),
            numpy_helper.from_array(rng.normal(0, 0.1, hidden).astype(np.float32), "b0"),
        ]
        nodes += [helper.make_node("Gemm", [current, "w0", "b0"], ["h0"]), helper.make_node("Relu", ["h0"], ["r0"])]
        current, width = "r0", hidden
    initializers += [
        numpy_helper.from_array(rng.normal(0, 0.5, (width, classes)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "b1"),
    ]
    nodes += [
        helper.make_node("Gemm", [current, "w1", "b1"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"classifier_{seed}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ferry-sample")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def classifier_signature(features: int = 64, classes: int = 10, labels: list[str] | None = None) -> Signature:
    """The signature of ``classifier_bytes(features, classes)``, its classes named ``labels`` when given."""
    return Signature(
        inputs=[TensorSpec(name=INPUT, datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name=OUTPUT, datatype="FP32", shape=[-1, classes])],
        labels=labels,
    )


def reference_probabilities(model: bytes, rows: np.ndarray) -> np.ndarray:
    """What ONNX Runtime on the CPU answers for ``rows``: the expected answer in tests."""
    result: np.ndarray = open_session(model).run(None, {INPUT: rows.astype(np.float32)})[0]
    return result
