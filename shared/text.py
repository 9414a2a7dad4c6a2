"""Text for classifiers: the one tokeniser and the vocabulary, exactly as the exported graph applies them.

A text model's served graph takes strings (``shared/text_onnx.py`` builds its front): it lower-cases ASCII
letters (ONNX ``StringNormalizer`` in the portable "C" locale, which leaves every other character as it is),
splits on the :data:`SEPARATORS` (ONNX Runtime's ``Tokenizer``, empty pieces dropped), maps each token to
its id in the vocabulary (``LabelEncoder``: 0 pads, 1 is any unknown token) and cuts or pads the ids to a
fixed length. :func:`tokens` and :meth:`Vocabulary.encode` are that same computation in Python, for
training; the trainer's verification runs the whole graph on held-out texts against them.

The vocabulary comes from the training rows only: the most frequent tokens, ties in code-point order, up
to a cap; the fixed length is the longest training text's token count, capped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SEPARATORS = (" ", "\t", "\n", "\r")
"""What splits a text into tokens; runs of them count as one, and leading or trailing ones are dropped."""
PAD_ID = 0
UNKNOWN_ID = 1
FIRST_TOKEN_ID = 2
MAX_VOCABULARY = 20_000
MAX_LENGTH = 64
"""Tokens a text model reads at most; a longer text is cut, a shorter one padded."""
_SPLIT = re.compile("[" + re.escape("".join(SEPARATORS)) + "]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalise(text: str) -> str:
    """ASCII letters lower-cased, nothing else changed (what ``StringNormalizer`` does in the "C" locale)."""
    return text.translate(_ASCII_LOWER)


def tokens(text: str) -> list[str]:
    """The tokens of one text, as the graph's tokeniser finds them."""
    return [token for token in _SPLIT.split(normalise(text)) if token]


@dataclass(frozen=True)
class Vocabulary:
    """Known tokens (the i-th has id ``FIRST_TOKEN_ID + i``) and the fixed length of a text's ids."""

    tokens: tuple[str, ...]
    max_length: int

    @property
    def size(self) -> int:
        """Ids in use: the padding, the unknown token and every known token (an embedding's row count)."""
        return FIRST_TOKEN_ID + len(self.tokens)

    def ids(self) -> dict[str, int]:
        """Each known token's id."""
        return {token: FIRST_TOKEN_ID + index for index, token in enumerate(self.tokens)}

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """Token ids, int64 [texts, max_length]: unknown tokens 1, cut to max_length, padded with 0."""
        known = self.ids()
        rows = [[known.get(token, UNKNOWN_ID) for token in tokens(text)][: self.max_length] for text in texts]
        encoded = np.full((len(rows), self.max_length), PAD_ID, dtype=np.int64)
        for row, ids in enumerate(rows):
            encoded[row, : len(ids)] = ids
        return encoded


def build_vocabulary(
    texts: Sequence[str], *, max_tokens: int = MAX_VOCABULARY, max_length: int = MAX_LENGTH
) -> Vocabulary:
    """The vocabulary of training texts: most frequent first, ties in code-point order; the same texts give
    the same vocabulary on every machine, in any order."""
    split_texts = [tokens(text) for text in texts]
    counts = Counter(token for found in split_texts for token in found)
    ranked = sorted(counts, key=lambda token: (-counts[token], token))[:max_tokens]
    longest = max((len(found) for found in split_texts), default=0)
    return Vocabulary(tuple(ranked), max(1, min(longest, max_length)))
