"""``gru``: a GRU reading each row as a sequence of equal steps; its last hidden state classifies."""

from __future__ import annotations

import torch
from torch import nn

from ferry_example_recipes.steps import at_least_one, step_count
from services.trainer.recipe import DatasetSpec, OptionValue, Recipe

MAX_HIDDEN_SIZE = 1024


class RowGRU(nn.Module):
    """(batch, steps × width) → (batch, steps, width) → GRU → last layer's final state → logits."""

    def __init__(self, steps: int, width: int, hidden_size: int, layers: int, num_classes: int) -> None:
        super().__init__()
        self.steps, self.width = steps, width
        self.gru = nn.GRU(width, hidden_size, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        # No initial state: ONNX's GRU starts from zeros for any batch size (the exporter's warning about
        # other batch sizes does not apply; the tests run the exported file at batch 1 and at many rows).
        _, final = self.gru(rows.reshape(-1, self.steps, self.width))
        return self.head(final[-1])


def build(spec: DatasetSpec, options: dict[str, OptionValue]) -> nn.Module:
    """A RowGRU for the dataset; ValueError for options it cannot use."""
    steps = step_count(spec, int(options["steps"]))
    hidden_size, layers = int(options["hidden_size"]), int(options["layers"])
    at_least_one(hidden_size=hidden_size, layers=layers)
    if hidden_size > MAX_HIDDEN_SIZE or layers > 4:
        raise ValueError(f"hidden_size is at most {MAX_HIDDEN_SIZE} and layers at most 4")
    return RowGRU(steps, spec.num_features // steps, hidden_size, layers, spec.num_classes)


gru = Recipe(
    description="GRU over each row read as equal steps (digits: 8 image rows of 8 pixels); "
    "a sequence classifier over tabular rows, not a text model",
    build=build,
    defaults={"steps": 0, "hidden_size": 64, "layers": 1},
)
