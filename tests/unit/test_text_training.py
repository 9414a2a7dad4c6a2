"""Text classifiers trained by the trainer's own job: both example recipes read token ids, export behind the
text front, pass verification and answer strings; a front that tokenises otherwise fails verification; what
cannot train on text is refused with its reason."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from text_support import CLEAR_TEXTS, LABELS, QUICK, TOPICS_DATASET, text_environment, train_text

from services.gateway.adapters.onnx_runtime import OnnxLoader
from services.gateway.batching import Batcher, Runner
from services.gateway.domain import BatchConfig
from services.trainer.adapters.onnx_model import export_onnx, verify_export
from services.trainer.adapters.recipes import find_recipe
from services.trainer.adapters.text_model import text_training_data, text_vocabulary, token_ids
from services.trainer.adapters.torch_training import fit
from services.trainer.domain import ExportCheckFailed, InvalidRequest, plan_training
from services.trainer.recipe import DatasetSpec, resolve_options
from services.trainer.service import load_split, run_training
from shared.events import Compression, TrainingRequested
from shared.text import Vocabulary
from shared.text_onnx import with_text_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with text_environment(tmp_path_factory.mktemp("text")) as root:
        yield root.parent


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_a_recipe_trains_a_text_classifier_that_answers_strings(environment: Path, arch: str) -> None:
    trained = train_text(environment / arch, arch)
    [given], [scores] = trained.signature.inputs, trained.signature.outputs
    assert (given.name, given.datatype, given.shape) == ("text", "BYTES", [-1])
    assert (scores.datatype, scores.shape, trained.signature.labels) == ("FP32", [-1, 3], LABELS)
    assert "verify" in trained.timings and trained.metrics["val_accuracy"] >= 0.9
    # As the gateway loads it: warmed up on empty strings, then asked in plain text.
    model = OnnxLoader(device="cpu").load(trained.path.read_bytes(), trained.signature, warmup_batches=(1, 3))
    texts = np.array(list(CLEAR_TEXTS.values()), dtype=object)
    [probabilities] = model.run({"text": texts})
    assert [LABELS[index] for index in probabilities.argmax(axis=1)] == list(CLEAR_TEXTS)
    # Dynamic batching concatenates the strings of concurrent requests like any rows, and splits the answers.
    runs, answers = batched(model.run, [texts[:1], texts[1:], texts[:2]])
    assert runs == [5]
    for rows, answer in zip([slice(0, 1), slice(1, 3), slice(0, 2)], answers, strict=True):
        assert np.allclose(answer[0], probabilities[rows], atol=1e-6)


def batched(run: Runner, requests: list[np.ndarray]) -> tuple[list[int], list[list[np.ndarray]]]:
    """The gateway's batcher over ``run``: the rows of each of its runs, and each request's answer."""
    runs: list[int] = []

    def counted(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        runs.append(len(feeds["text"]))
        return run(feeds)

    async def scenario() -> list[list[np.ndarray]]:
        batcher = Batcher(counted, BatchConfig(max_batch_size=8, max_delay_ms=0))
        answers = await asyncio.gather(*(batcher.submit({"text": texts}) for texts in requests))
        batcher.close()
        return list(answers)

    return runs, asyncio.run(scenario())


def test_a_front_that_tokenises_otherwise_fails_verification(environment: Path) -> None:
    request = TrainingRequested(model_name="topics", dataset=TOPICS_DATASET, arch="gru", hyperparameters=QUICK)
    parts = load_split(request)
    vocabulary = text_vocabulary(parts)
    plan = plan_training(request, parts.dataset, budget_s=60, max_world_size=1, vocabulary=vocabulary)
    result = fit(plan, text_training_data(parts, vocabulary))
    exported = environment / "broken"
    exported.mkdir()
    network = export_onnx(result.classifier, exported / "network.onnx")
    ids, texts = token_ids(parts.validation, vocabulary), parts.validation.inputs
    good = with_text_input(network, vocabulary, exported / "good.onnx")
    assert verify_export(result.classifier, good, ids, texts) < 1e-4
    # The same network behind a front whose vocabulary numbers the tokens the other way round.
    shuffled = Vocabulary(tuple(reversed(vocabulary.tokens)), vocabulary.max_length)
    broken = with_text_input(network, shuffled, exported / "broken.onnx")
    with pytest.raises(ExportCheckFailed, match="differs from torch"):
        verify_export(result.classifier, broken, ids, texts)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"arch": "mlp"}, "is a text dataset; arch 'mlp' reads numbers"),
        ({"arch": "cnn"}, "use a recipe that reads token ids, such as gru or transformer"),
        ({"compression": Compression(quantize="int8")}, "do not apply to text models yet"),
        ({"world_size": 2}, "a text model trains in one process"),
    ],
)
def test_what_cannot_train_on_text_is_refused_with_its_reason(
    environment: Path, fields: dict[str, object], reason: str
) -> None:
    values: dict[str, object] = {"model_name": "topics", "dataset": TOPICS_DATASET, "arch": "gru"} | fields
    with pytest.raises(InvalidRequest, match=reason):
        run_training(TrainingRequested(**values), workdir=environment)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_the_recipes_build_text_networks_from_the_spec(environment: Path, arch: str) -> None:
    recipe = find_recipe(arch)
    spec = DatasetSpec("csv:t.csv", num_features=7, num_classes=4, vocabulary_size=30)
    network = recipe.build(spec, resolve_options(arch, recipe.defaults, {})).eval()
    ids = torch.tensor([[2.0, 5.0, 29.0, 0, 0, 0, 0], [0.0] * 7])  # a text, and an empty one
    with torch.no_grad():
        logits = network(ids)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    padded = torch.tensor([[2.0, 5.0, 29.0, 0, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(network(padded), logits[:1], atol=1e-6)  # a text's answer ignores its batch
