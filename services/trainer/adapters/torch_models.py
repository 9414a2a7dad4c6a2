"""The torch networks the trainer builds: an MLP, a small CNN, or a recipe's network, all taking raw flat features.

Standardization (fitted on the training rows) is a layer of the network, so it is exported with
the graph and the served model takes raw features like the dataset's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from services.trainer.adapters.recipes import recipe_network
from services.trainer.domain import TrainingPlan
from services.trainer.recipe import RecipeRefused

CNN_CHANNELS = (16, 32)


class Standardize(nn.Module):
    """(x - mean) / std with constants from the training rows."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class ImageCNN(nn.Module):
    """Two 3×3 convolutions and a dense head; reshapes the flat vector into one image channel."""

    def __init__(self, image_shape: tuple[int, int], hidden_sizes: list[int], num_classes: int) -> None:
        super().__init__()
        height, width = image_shape
        self.image_shape = image_shape
        first, second = CNN_CHANNELS
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = _dense_stack(second * (height // 2) * (width // 2), hidden_sizes, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        images = features.reshape(-1, 1, *self.image_shape)
        return self.head(self.features(images))


def _dense_stack(inputs: int, hidden_sizes: list[int], outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(inputs, size), nn.ReLU()]
        inputs = size
    layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Standardize, then the body; ``forward`` gives logits (what the losses want)."""

    def __init__(self, standardize: Standardize, body: nn.Module) -> None:
        super().__init__()
        self.standardize = standardize
        self.body = body

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardize(features))


class Regressor(Classifier):
    """A classifier's shape with one output: the target, standardized by the training rows' mean and std."""

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, standardize: Standardize, body: nn.Module, target_mean: float, target_std: float) -> None:
        super().__init__(standardize, body)
        self.register_buffer("target_mean", torch.tensor(target_mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_std, dtype=torch.float32))


class ValueModel(nn.Module):
    """What a regressor exports: its output in the target's own units, [batch, 1]."""

    def __init__(self, regressor: Regressor) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.regressor(features) * self.regressor.target_std + self.regressor.target_mean


def served_model(classifier: Classifier) -> nn.Module:
    """The network as clients call it: probabilities for a classifier, the value for a regressor."""
    if isinstance(classifier, Regressor):
        return ValueModel(classifier)
    return ProbabilityModel(classifier)


def target_standardization(train_targets: np.ndarray) -> tuple[float, float]:
    """Mean and std of the training targets (std 1 for a constant target, which the dataset refuses anyway)."""
    mean, std = float(np.mean(train_targets)), float(np.std(train_targets))
    return mean, std if std > 1e-8 else 1.0


class ProbabilityModel(nn.Module):
    """What is exported: the classifier followed by a softmax, so clients get probabilities."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(features), dim=1)


def standardization(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the training rows; constant columns get std 1 so they map to 0, not NaN."""
    mean = train_features.astype(np.float64).mean(axis=0)
    std = train_features.astype(np.float64).std(axis=0)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def build_classifier(
    plan: TrainingPlan, mean: np.ndarray, std: np.ndarray, seed: int, target: tuple[float, float] = (0.0, 1.0)
) -> Classifier:
    """A freshly initialised network for the plan; the seed alone decides the initial weights.

    A regression plan gets a :class:`Regressor` whose target is standardized by ``target`` (mean, std).
    """
    hidden = list(plan.hyperparameters.hidden_sizes)
    # fork_rng: seed the initialisation without changing the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if plan.arch == "cnn":
            assert plan.image_shape is not None  # plan_training guarantees it
            body: nn.Module = ImageCNN(plan.image_shape, hidden, plan.num_classes)
        elif plan.arch == "mlp":
            body = _dense_stack(plan.num_features, hidden, plan.num_classes)
        else:
            body = recipe_network(plan)
    if plan.is_regression:
        return Regressor(Standardize(mean, std), body, *target)
    return Classifier(Standardize(mean, std), body)


@torch.no_grad()
def check_network(plan: TrainingPlan) -> None:
    """Build the plan's network once and run 1 and 3 rows through it; RecipeRefused unless it gives logits.

    Before any training: a recipe that cannot build, or whose network does not map (batch, features) to
    (batch, classes) at any batch size, ends the request at once with the reason, not an epoch later.
    """
    placeholder = np.zeros(plan.num_features, dtype=np.float32)
    classifier = build_classifier(plan, placeholder, placeholder + 1, plan.hyperparameters.seed).eval()
    for rows in (1, 3):
        try:
            logits = classifier(torch.zeros(rows, plan.num_features))
        except Exception as error:  # noqa: BLE001 - a recipe's network is its author's code
            raise RecipeRefused(
                f"the network of recipe {plan.arch!r} fails on {rows} row(s) of {plan.num_features} features: "
                f"{type(error).__name__}: {error}"
            ) from error
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        if shape != (rows, plan.num_classes):
            raise RecipeRefused(
                f"the network of recipe {plan.arch!r} maps {rows} row(s) to {shape}; "
                f"it must give logits ({rows}, {plan.num_classes})"
            )
