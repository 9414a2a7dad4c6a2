"""Small ONNX classifiers for the evaluator's tests, built without torch: a linear layer and a softmax.

``fitted_digits`` fits a logistic regression on digits' *train* part (never the test part) and writes
its weights into the graph, which makes a good model in a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def softmax_classifier(
    weights: np.ndarray, bias: np.ndarray, *, input_name: str = "input", output_name: str = "probabilities"
) -> bytes:
    """input FP32 [batch, d] → Gemm → Softmax → output FP32 [batch, k], opset 17."""
    features, classes = weights.shape
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", [input_name, "weights", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [output_name], axis=1),
        ],
        "classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "weights"),
            numpy_helper.from_array(bias.astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fitted_digits(
    *, regularisation: float = 1.0, rows: int | None = None, bias_shift: dict[int, float] | None = None, **names: str
) -> bytes:
    """A logistic regression on digits' train part (its first ``rows`` rows, when given); ``bias_shift`` adds to
    some classes' logits (a negative shift makes a class rarely predicted: its recall falls)."""
    from sklearn.linear_model import LogisticRegression

    from shared.datasets import load_dataset, split

    train = split(load_dataset("sklearn:digits")).train
    features, labels = train.features[:rows] / 16.0, train.labels[:rows]
    fitted = LogisticRegression(C=regularisation, max_iter=300).fit(features, labels)
    bias = fitted.intercept_.copy()
    for index, shift in (bias_shift or {}).items():
        bias[index] += shift
    return softmax_classifier(fitted.coef_.T / 16.0, bias, **names)


def erring_classifier(thresholds: list[float]) -> bytes:
    """A classifier of rows shaped ``[one-hot of the class (k), a coin in [0, 1) in the class's column (k)]``
    that answers the true class c, or the next class when the row's coin exceeds ``thresholds[c]``: where its
    errors fall is chosen class by class."""
    classes = len(thresholds)
    weights = np.full((2 * classes, classes), 0.0)
    for index, threshold in enumerate(thresholds):
        following = (index + 1) % classes
        weights[index, :] = -100.0  # every other class: far behind
        weights[index, index] = 0.0
        weights[index, following] = -50.0 * threshold  # the next class wins when 50 × (coin - threshold) > 0
        weights[classes + index, following] = 50.0
    return softmax_classifier(weights, np.zeros(classes))


def random_digits(seed: int = 0, **names: str) -> bytes:
    """A model that guesses: random weights."""
    rng = np.random.default_rng(seed)
    return softmax_classifier(rng.normal(size=(64, 10)) * 0.01, np.zeros(10), **names)


def linear_regressor(weights: np.ndarray, bias: float, *, output_name: str = "prediction", flat: bool = False) -> bytes:
    """input FP32 [batch, d] → Gemm → output FP32 [batch, 1] (``flat``: [batch]), opset 17: a linear regressor."""
    features = weights.shape[0]
    nodes = [helper.make_node("Gemm", ["input", "weights", "bias"], ["column" if flat else output_name])]
    if flat:
        nodes.append(helper.make_node("Reshape", ["column", "flat_shape"], [output_name]))
    graph = helper.make_graph(
        nodes,
        "regressor",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch"] if flat else ["batch", 1])],
        initializer=[
            numpy_helper.from_array(weights.reshape(features, 1).astype(np.float32), "weights"),
            numpy_helper.from_array(np.array([bias], dtype=np.float32), "bias"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fitted_diabetes(*, regularisation: float = 1.0, features: int | None = None, flat: bool = False) -> bytes:
    """A ridge regression on diabetes' train part (on its first ``features`` columns, the rest weighted 0)."""
    from sklearn.linear_model import Ridge

    from shared.datasets import load_dataset, split

    train = split(load_dataset("sklearn:diabetes")).train
    used = train.features[:, :features] if features is not None else train.features
    fitted = Ridge(alpha=regularisation).fit(used, train.labels)
    weights = np.zeros(train.features.shape[1])
    weights[: used.shape[1]] = fitted.coef_
    return linear_regressor(weights, float(fitted.intercept_), flat=flat)
