"""A text model's data and file: token ids for training, and the network exported on ids behind the text
front (``shared/text_onnx.py``), verified whole: the served graph on held-out texts against torch on the
ids that ``shared.text`` gives the same texts, so a tokeniser that drifted from training fails the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.trainer.adapters.onnx_model import export_onnx, verify_export
from services.trainer.adapters.torch_models import Classifier
from services.trainer.adapters.torch_training import TrainingData
from shared.datasets import Part, Split
from shared.text import Vocabulary, build_vocabulary
from shared.text_onnx import with_text_input


def text_vocabulary(parts: Split) -> Vocabulary:
    """The vocabulary of the training texts only: validation and test words are unknown words to it."""
    assert parts.train.texts is not None  # callers ask only of text datasets
    return build_vocabulary([str(text) for text in parts.train.texts])


def token_ids(part: Part, vocabulary: Vocabulary) -> np.ndarray:
    """A part's texts as the network reads them: fixed-length token ids, float32."""
    assert part.texts is not None
    return vocabulary.encode(str(text) for text in part.texts).astype(np.float32)


def text_training_data(parts: Split, vocabulary: Vocabulary) -> TrainingData:
    """Train and validation texts as token ids; the test part never reaches the trainer."""
    return TrainingData(
        train_features=token_ids(parts.train, vocabulary),
        train_labels=parts.train.labels,
        val_features=token_ids(parts.validation, vocabulary),
        val_labels=parts.validation.labels,
    )


def export_text_model(classifier: Classifier, vocabulary: Vocabulary, workdir: Path, validation: Part) -> Path:
    """The served file (strings in, probabilities out), checked on the validation texts; ExportCheckFailed
    when it differs from torch."""
    network = export_onnx(classifier, workdir / "network.onnx")
    path = with_text_input(network, vocabulary, workdir / "model.onnx")
    verify_export(classifier, path, token_ids(validation, vocabulary), validation.inputs)
    return path
