"""``transformer``: a small Transformer encoder over a text's tokens (a text dataset), or over each row cut into
equal steps, as tokens."""

from __future__ import annotations

import torch
from torch import nn

from ferry_example_recipes.steps import at_least_one, step_count
from ferry_example_recipes.tokens import TokenEmbedding, mean_over_tokens
from services.trainer.recipe import DatasetSpec, OptionValue, Recipe

MAX_WIDTH = 1024


class RowTransformer(nn.Module):
    """Steps → linear embedding + learned position → encoder layers → mean over tokens → logits.

    With a ``vocabulary_size``, the steps are a text's token ids: embedded, and the mean taken over the real
    tokens only (the pads still attend and are attended to: every text is padded alike, so a text's answer
    never depends on what else is in its batch)."""

    def __init__(
        self, steps: int, width: int, options: dict[str, OptionValue], num_classes: int, vocabulary_size: int = 0
    ) -> None:
        super().__init__()
        self.steps, self.width, self.text = steps, width, vocabulary_size > 0
        d_model = int(options["d_model"])
        self.embed: nn.Module = TokenEmbedding(vocabulary_size, d_model) if self.text else nn.Linear(width, d_model)
        self.position = nn.Parameter(torch.randn(1, steps, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            int(options["heads"]),
            dim_feedforward=int(options["feedforward"]),
            dropout=float(options["dropout"]),
            batch_first=True,
        )
        # No nested tensors: they serve padded batches, which rows of equal length never are, and they
        # take a path the ONNX exporter does not know.
        self.encoder = nn.TransformerEncoder(layer, int(options["layers"]), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.text:
            encoded = self.encoder(self.embed(rows) + self.position)
            return self.head(self.norm(mean_over_tokens(encoded, rows)))
        tokens = self.embed(rows.reshape(-1, self.steps, self.width)) + self.position
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


def build(spec: DatasetSpec, options: dict[str, OptionValue]) -> nn.Module:
    """A RowTransformer for the dataset (over token ids for a text dataset); ValueError for options it cannot use."""
    steps = spec.num_features if spec.is_text else step_count(spec, int(options["steps"]))
    d_model, heads = int(options["d_model"]), int(options["heads"])
    at_least_one(d_model=d_model, heads=heads, layers=int(options["layers"]), feedforward=int(options["feedforward"]))
    if d_model % heads:
        raise ValueError(f"d_model {d_model} must be a multiple of heads {heads}")
    if max(d_model, int(options["feedforward"])) > MAX_WIDTH or int(options["layers"]) > 6:
        raise ValueError(f"d_model and feedforward are at most {MAX_WIDTH}, layers at most 6")
    if not 0.0 <= float(options["dropout"]) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {options['dropout']}")
    return RowTransformer(steps, spec.num_features // steps, options, spec.num_classes, spec.vocabulary_size)


transformer = Recipe(
    description="small Transformer encoder text classifier over token embeddings (a text csv); on tabular rows, "
    "over each row's equal steps as tokens (digits: 8 image rows)",
    build=build,
    defaults={"steps": 0, "d_model": 32, "heads": 4, "layers": 2, "feedforward": 64, "dropout": 0.1},
)
