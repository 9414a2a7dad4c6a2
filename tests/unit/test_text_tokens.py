"""The tokeniser in Python and the one inside the served graph give the same ids, on tricky strings and on
random ones; the vocabulary is a deterministic function of the training texts."""

from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort
import pytest

from shared.text import MAX_LENGTH, PAD_ID, UNKNOWN_ID, Vocabulary, build_vocabulary, normalise, tokens
from shared.text_onnx import TEXT_INPUT_NAME, text_prefix

TRAINING = ["Hello big world", "the cat sat on the mat", "hello again", "a b c d e f g h i j k"]
TRICKY = [
    "",
    "   ",
    "HELLO  Big\tWORLD",
    "\r\nthe\r\n",
    "unknown words only",
    "a b c d e f g h i j k l m n o p",  # longer than the fixed length
    "İstanbul ÉCOLE straße ΣΑΣ the",  # only ASCII letters are lower-cased, in Python as in the graph
    "emoji 😀 日本語 the",
    "no\u00a0break\x0bvertical tab",  # not separators: part of a token
    "#hash, punctuation. stays!",
]


def graph_ids(vocabulary: Vocabulary, texts: list[str]) -> np.ndarray:
    session = ort.InferenceSession(text_prefix(vocabulary, opset=17, ir_version=8).SerializeToString())
    ids: np.ndarray = session.run(None, {TEXT_INPUT_NAME: np.array(texts, dtype=object)})[0]
    return ids


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return build_vocabulary(TRAINING, max_length=6)


def test_tricky_strings_give_the_same_ids_in_python_and_in_the_graph(vocabulary: Vocabulary) -> None:
    expected = vocabulary.encode(TRICKY)
    assert np.array_equal(graph_ids(vocabulary, TRICKY), expected.astype(np.float32))
    # One at a time too: a batch pads to its longest text, a lone text must come out the same.
    for row, text in enumerate(TRICKY):
        assert np.array_equal(graph_ids(vocabulary, [text])[0], expected[row])


def test_the_ids_mean_what_the_vocabulary_says(vocabulary: Vocabulary) -> None:
    known = vocabulary.ids()
    [upper, empty, long] = vocabulary.encode(["HELLO  Big\tWORLD", "", "a b c d e f g h"])
    assert upper.tolist() == [known["hello"], known["big"], known["world"], PAD_ID, PAD_ID, PAD_ID]
    assert empty.tolist() == [PAD_ID] * 6
    assert long.tolist() == [known[token] for token in ["a", "b", "c", "d", "e", "f"]]  # cut to the fixed length
    [unknown] = vocabulary.encode(["zebra hello"])
    assert unknown[:2].tolist() == [UNKNOWN_ID, known["hello"]]


def test_random_strings_give_the_same_ids_in_python_and_in_the_graph(vocabulary: Vocabulary) -> None:
    rng = random.Random(7)
    alphabet = [*"aBcHELLO xyz\t\n\r#.,É日😀\u00a0İß", "hello", "the", "  "]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(500)]
    assert np.array_equal(graph_ids(vocabulary, texts), vocabulary.encode(texts).astype(np.float32))


def test_only_ascii_letters_are_lower_cased() -> None:
    assert normalise("ÉCOLE Hello İ") == "École hello İ"
    assert tokens("  One\ttwo\r\nTHREE  ") == ["one", "two", "three"]
    assert tokens("") == [] and tokens(" \t ") == []


def test_the_vocabulary_is_the_same_for_the_same_texts_in_any_order() -> None:
    shuffled = list(reversed(TRAINING))
    assert build_vocabulary(TRAINING) == build_vocabulary(shuffled)
    first = build_vocabulary(TRAINING)
    assert first.tokens[:2] == ("hello", "the")  # most frequent first, ties in code-point order
    assert first.tokens[2:5] == ("a", "again", "b")
    assert first.max_length == 11  # the longest training text, under the cap
    assert first.size == len(first.tokens) + 2


def test_the_vocabulary_and_the_length_are_capped() -> None:
    many = [" ".join(f"w{index}" for index in range(start, start + 100)) for start in range(0, 1000, 100)]
    capped = build_vocabulary(many, max_tokens=50)
    assert len(capped.tokens) == 50 and capped.max_length == MAX_LENGTH
    assert build_vocabulary(["", " "]).max_length == 1  # a model needs at least one position
