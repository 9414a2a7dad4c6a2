"""Text models for the tests: the example text csv under a datasets root, and text classifiers trained on it by
the real trainer code in this process (a few epochs of the example recipes: seconds)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from recipes_support import EXAMPLES, ROOT, write_examples

from services.trainer.service import TrainedModel, run_training
from shared.events import Hyperparameters, TrainingRequested

TOPICS = ROOT / "examples" / "data" / "topics.csv"
TOPICS_DATASET = "csv:topics.csv"
LABELS = ["cooking", "sports", "weather"]
QUICK = Hyperparameters(epochs=6, patience=3, learning_rate=5e-3, batch_size=32)
"""Enough for the example topics (the validation accuracy reaches 1.0 in a few epochs)."""
SMALL = {"gru": {"hidden_size": 32}, "transformer": {"d_model": 16, "feedforward": 32}}
"""Each example recipe's options for a small, quick network."""
CLEAR_TEXTS = {
    "cooking": "Simmer the SAUCE slowly before serving",
    "sports": "the striker scored a late goal in the second half",
    "weather": "heavy   rain is expected tomorrow across the region",
}


def datasets_root(folder: Path) -> Path:
    """A datasets root holding the example text csv as topics.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TOPICS, folder / "topics.csv")
    return folder


@contextmanager
def text_environment(folder: Path) -> Iterator[Path]:
    """FERRY_DATASETS_ROOT at a root holding topics.csv, and the example recipes findable, for the block."""
    root = datasets_root(folder / "datasets")
    site = write_examples(folder / "site")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FERRY_DATASETS_ROOT", str(root))
        patch.syspath_prepend(str(EXAMPLES))
        patch.syspath_prepend(str(site))
        yield root


def train_text(workdir: Path, arch: str = "gru", hyperparameters: Hyperparameters = QUICK) -> TrainedModel:
    """A text classifier on topics.csv (inside :func:`text_environment`), trained by the trainer's own job."""
    workdir.mkdir(parents=True, exist_ok=True)
    hyperparameters = hyperparameters.model_copy(update={"options": SMALL.get(arch, {})})
    request = TrainingRequested(model_name="topics", dataset=TOPICS_DATASET, arch=arch, hyperparameters=hyperparameters)
    return run_training(request, workdir=workdir)
