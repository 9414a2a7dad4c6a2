"""ONNX models trained outside Ferry, converted by their ecosystem's own converters (for ``ferry register``)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from skl2onnx import to_onnx
from sklearn.base import BaseEstimator, is_classifier
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shared.datasets import load_dataset, split


def sklearn_digits(*, target_opset: int = 17) -> bytes:
    """StandardScaler + LogisticRegression on digits' training part, by skl2onnx (outputs: label, probabilities)."""
    return sklearn_model("sklearn:digits", LogisticRegression(max_iter=500), target_opset=target_opset)


def sklearn_diabetes(regressor: str = "ridge") -> bytes:
    """StandardScaler + a scikit-learn regressor (``ridge`` or ``boosting``) on diabetes' training part, by
    skl2onnx (one output, ``variable`` FP32 [N, 1]; boosting's trees are an ai.onnx.ml TreeEnsembleRegressor)."""
    estimator = Ridge() if regressor == "ridge" else GradientBoostingRegressor(n_estimators=60, random_state=0)
    return sklearn_model("sklearn:diabetes", estimator)


def sklearn_model(
    dataset: str,
    estimator: BaseEstimator,
    *,
    target: Callable[[np.ndarray], np.ndarray] | None = None,
    target_opset: int = 17,
) -> bytes:
    """StandardScaler + ``estimator`` fitted on ``dataset``'s training part (to its labels, or ``target`` of
    them), converted by skl2onnx; a classifier's probabilities as a tensor (zipmap off)."""
    train = split(load_dataset(dataset)).train
    labels = train.labels if target is None else target(train.labels)
    pipeline = Pipeline([("scale", StandardScaler()), ("fit", estimator)]).fit(train.features, labels)
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    converted = to_onnx(pipeline, train.features[:1].astype(np.float32), options=options, target_opset=target_opset)
    return converted.SerializeToString()


class UserNetwork(torch.nn.Module):
    """A user's own module: a small MLP ending in a softmax (``softmax=False`` leaves logits)."""

    def __init__(self, num_features: int, num_classes: int, *, softmax: bool = True) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(num_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, num_classes)
        )
        self.softmax = softmax

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scores = self.layers(features)
        return torch.softmax(scores, dim=1) if self.softmax else scores


def torch_network(
    num_features: int = 64,
    num_classes: int = 10,
    *,
    softmax: bool = True,
    names: tuple[str, str] = ("input", "probabilities"),
) -> bytes:
    """``UserNetwork`` (untrained, seeded) exported by torch.onnx with a dynamic batch axis, its tensors ``names``."""
    torch.manual_seed(0)
    network = UserNetwork(num_features, num_classes, softmax=softmax).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: one self-contained file
        warnings.simplefilter("ignore", category=DeprecationWarning)
        _export(network, num_features, buffer, names)
    return buffer.getvalue()


def _export(network: torch.nn.Module, num_features: int, buffer: io.BytesIO, names: tuple[str, str]) -> None:
    feed, output = names
    torch.onnx.export(
        network,
        (torch.zeros(2, num_features),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=[feed],
        output_names=[output],
        dynamic_axes={feed: {0: "batch"}, output: {0: "batch"}},
    )
