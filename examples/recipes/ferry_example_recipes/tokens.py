"""How the examples read a text: Ferry hands them token ids (0 pads the end); they embed them and pool
the positions that hold a token."""

from __future__ import annotations

import torch
from torch import nn

MAX_EMBEDDING_SIZE = 1024


class TokenEmbedding(nn.Module):
    """Token ids (float32, as every Ferry row is) → vectors; the padding id 0 embeds to zeros."""

    def __init__(self, vocabulary_size: int, size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, size, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids.long())


def mean_over_tokens(states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The mean of (batch, length, width) states over each row's real tokens (zeros for an empty text)."""
    present = (ids > 0).to(states.dtype).unsqueeze(-1)
    return (states * present).sum(dim=1) / present.sum(dim=1).clamp(min=1.0)
