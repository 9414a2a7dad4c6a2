"""The real evaluator (in-process, on the real broker, a registry process and PostgreSQL) judging text models:
a text candidate scored against a text champion on the held-out texts of the csv, and a tabular model refused
against a text champion with the reason."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from evaluator_onnx import fitted_digits
from sklearn.metrics import accuracy_score
from test_evaluator_service import (  # noqa: F401 - settings and registry_url are this module's fixtures too
    Api,
    champion_is,
    evaluator,
    publish,
    registry_url,
    settings,
    settle,
)
from text_support import QUICK, TOPICS_DATASET, text_environment, train_text

from services.trainer.service import TrainedModel
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, new_id
from shared.onnx import open_session, predict, signature_of
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def text_models(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Iterator[list[TrainedModel]]:
    """Two text classifiers of topics.csv (different seeds), trained by the trainer's own job; the datasets root
    stays set for the module, as the evaluator reads the csv too."""
    folder = tmp_path_factory.mktemp("text-evaluator")
    with text_environment(folder):
        yield [train_text(folder / f"seed-{seed}", "gru", QUICK.model_copy(update={"seed": seed})) for seed in (1, 2)]


def announce(ferry: FerrySettings, model: str, trained: TrainedModel) -> None:
    """Store a trained text model and announce it as the trainer does."""
    data = trained.path.read_bytes()
    uri, sha256, size = ArtifactStore(ferry.resolved_artifact_root).put_bytes(data)
    event = ModelTrained(
        model_name=model,
        request_id=new_id(),
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format=trained.format),
        signature=trained.signature,
        dataset=TOPICS_DATASET,
        split_id=trained.split_id,
        arch="gru",
        hyperparameters=QUICK,
    )
    publish(ferry, event)


def announce_tabular(ferry: FerrySettings, model: str) -> None:
    data = fitted_digits()
    uri, sha256, size = ArtifactStore(ferry.resolved_artifact_root).put_bytes(data)
    digits = split(load_dataset("sklearn:digits"))
    event = ModelTrained(
        model_name=model,
        request_id=new_id(),
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature=signature_of(open_session(data)),
        dataset="sklearn:digits",
        split_id=digits.split_id,
        arch="mlp",
        hyperparameters=Hyperparameters(),
    )
    publish(ferry, event)


def test_a_text_candidate_is_judged_against_a_text_champion_on_the_held_out_texts(
    settings: FerrySettings,  # noqa: F811 - the imported fixture
    registry_url: str,  # noqa: F811
    text_models: list[TrainedModel],
) -> None:
    api = Api(registry_url, "topics")
    with evaluator(settings, registry_url, bake_s=600.0):
        announce(settings, "topics", text_models[0])
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        announce(settings, "topics", text_models[1])
        settle(api, lambda: api.evaluations(2), "v2's evaluation")
        announce_tabular(settings, "topics")
        settle(api, lambda: api.evaluations(3), "v3's evaluation")

    held_out = split(load_dataset(TOPICS_DATASET)).test
    [*_, judged] = api.evaluations(2)
    report = judged["report"]
    assert report["split"]["rows"] == len(held_out) and report["classes"] == ["cooking", "sports", "weather"]
    for side, version in (("candidate", 2), ("champion", 1)):
        data = httpx.get(f"{api.base}/versions/{version}/artifact", timeout=10).content
        predictions = predict(open_session(data), held_out.inputs).argmax(axis=1)
        expected = accuracy_score(held_out.labels, predictions)
        assert report[side]["metrics"]["accuracy"] == pytest.approx(expected)
        assert expected >= 0.9 and np.all(np.asarray(report[side]["confusion_matrix"]).sum(axis=1) > 0)

    [refused] = api.evaluations(3)
    assert refused["decision"] == "reject"
    assert "v3 is a tabular model (FP32 features) and the champion v1 a text model (BYTES input)" in refused["reason"]
    assert "a text model cannot be compared with a tabular one" in refused["reason"]
