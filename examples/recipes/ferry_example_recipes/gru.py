"""``gru``: a GRU over a text's tokens (a text dataset), or over each row read as a sequence of equal steps."""

from __future__ import annotations

import torch
from torch import nn

from ferry_example_recipes.steps import at_least_one, step_count
from ferry_example_recipes.tokens import MAX_EMBEDDING_SIZE, TokenEmbedding, mean_over_tokens
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


class TextGRU(nn.Module):
    """Token ids → embedding → GRU → mean of its outputs over the real tokens → logits."""

    def __init__(self, vocabulary_size: int, embedding_size: int, hidden_size: int, layers: int, classes: int) -> None:
        super().__init__()
        self.embed = TokenEmbedding(vocabulary_size, embedding_size)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Pads sit at the end, after every real token: the outputs there are left out of the mean.
        outputs, _ = self.gru(self.embed(ids))
        return self.head(mean_over_tokens(outputs, ids))


def build(spec: DatasetSpec, options: dict[str, OptionValue]) -> nn.Module:
    """A TextGRU for a text dataset, else a RowGRU; ValueError for options it cannot use."""
    hidden_size, layers = int(options["hidden_size"]), int(options["layers"])
    embedding_size = int(options["embedding_size"])
    at_least_one(hidden_size=hidden_size, layers=layers, embedding_size=embedding_size)
    if hidden_size > MAX_HIDDEN_SIZE or layers > 4 or embedding_size > MAX_EMBEDDING_SIZE:
        raise ValueError(
            f"hidden_size is at most {MAX_HIDDEN_SIZE}, layers at most 4, embedding_size at most {MAX_EMBEDDING_SIZE}"
        )
    if spec.is_text:
        return TextGRU(spec.vocabulary_size, embedding_size, hidden_size, layers, spec.num_classes)
    steps = step_count(spec, int(options["steps"]))
    return RowGRU(steps, spec.num_features // steps, hidden_size, layers, spec.num_classes)


gru = Recipe(
    description="GRU text classifier over token embeddings (a text csv); on tabular rows, a GRU over each row "
    "read as equal steps (digits: 8 image rows of 8 pixels)",
    build=build,
    defaults={"steps": 0, "hidden_size": 64, "layers": 1, "embedding_size": 32},
)
