"""The real evaluator (in-process, on the real broker, a registry process and PostgreSQL) judging regressors:
a ridge regression on diabetes against a weaker one, on RMSE with its interval and the paired bootstrap of
per-row errors; a classifier refused against a regression champion; and a scikit-learn regressor uploaded
through the registry's REST route (``ferry register``) judged against a Ferry-trained regressor champion."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from evaluator_onnx import fitted_diabetes, fitted_digits
from external_models import sklearn_diabetes, torch_network
from test_evaluator_service import (  # noqa: F401 - settings and registry_url are this module's fixtures too
    REGISTRY_TOKEN,
    Api,
    champion_is,
    evaluator,
    publish,
    registry_url,
    settings,
    settle,
)

from services.trainer.service import run_training
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TrainingRequested, new_id
from shared.onnx import open_session, predict, signature_of
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryRefused, RegistryUnauthorized
from shared.regression import quantile_edges
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration]
QUICK = Hyperparameters(epochs=15, hidden_sizes=[32], learning_rate=1e-2, patience=5)  # a small MLP, seconds

DIABETES = split(load_dataset("sklearn:diabetes"))
DIGITS = split(load_dataset("sklearn:digits"))


def announce(ferry: FerrySettings, model: str, data: bytes, *, regressor: bool) -> None:
    """Store the artifact and publish its model.trained as the trainer would (a regressor's bins from validation)."""
    uri, sha256, size = ArtifactStore(ferry.resolved_artifact_root).put_bytes(data)
    signature: Signature = signature_of(open_session(data))
    held_out = DIABETES if regressor else DIGITS
    if regressor:
        signature = signature.regressor(quantile_edges(predict(open_session(data), DIABETES.validation.features)))
    publish(
        ferry,
        ModelTrained(
            model_name=model,
            request_id=new_id(),
            artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
            signature=signature,
            dataset=held_out.dataset.name,
            split_id=held_out.split_id,
            arch="mlp",
            hyperparameters=Hyperparameters(),
        ),
    )


def test_a_better_regressor_is_promoted_on_rmse_and_a_classifier_is_refused(
    settings: FerrySettings,  # noqa: F811 - the imported fixture
    registry_url: str,  # noqa: F811
) -> None:
    api = Api(registry_url, "diabetes")
    with evaluator(settings, registry_url, bake_s=600.0):
        announce(settings, "diabetes", fitted_diabetes(features=3), regressor=True)
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        announce(settings, "diabetes", fitted_diabetes(regularisation=0.01), regressor=True)
        settle(api, lambda: champion_is(api, 1, challenger=2), "v2 as the canary")
        announce(settings, "diabetes", fitted_digits(), regressor=False)
        settle(api, lambda: api.evaluations(3), "v3's evaluation")

    [first] = api.evaluations(1)
    assert first["report"]["task"] == "regression" and "r2" in first["reason"]
    [canary] = api.evaluations(2)
    report = canary["report"]
    assert report["task"] == "regression" and report["primary_metric"] == "rmse" and report["classes"] == []
    assert "rmse" in canary["reason"] and "vs champion v1" in canary["reason"]
    candidate, champion = report["candidate"], report["champion"]
    targets = DIABETES.test.labels
    for section, version in ((candidate, 2), (champion, 1)):
        data = httpx.get(f"{api.base}/versions/{version}/artifact", timeout=10).content
        values = predict(open_session(data), DIABETES.test.features)[:, 0].astype(np.float64)
        rmse = float(np.sqrt(np.mean((values - targets) ** 2)))
        assert section["metrics"]["rmse"] == pytest.approx(rmse, rel=1e-6)
        interval = section["intervals"]["rmse"]
        assert interval["low"] < rmse < interval["high"]
        assert set(section["intervals"]) == {"rmse", "mae", "r2"}
        assert sum(section["prediction_distribution"].values()) == pytest.approx(1.0)
    comparison = report["comparison"]["rmse"]
    assert comparison["test"] == "paired bootstrap of per-row errors" and comparison["lower_is_better"]
    difference = comparison["difference"]
    assert difference["estimate"] == pytest.approx(candidate["metrics"]["rmse"] - champion["metrics"]["rmse"])
    assert difference["low"] <= difference["estimate"] <= difference["high"] and difference["estimate"] < 0
    assert comparison["margin"] == pytest.approx(0.05 * champion["metrics"]["rmse"])
    assert comparison["non_inferior"] and "mcnemar" not in comparison

    [refused] = api.evaluations(3)
    assert refused["decision"] == "reject"
    assert "a regressor cannot be compared with a classifier" in refused["reason"]
    assert api.get("/versions/3")["status"] == "rejected"


@pytest.mark.usefixtures("one_torch_thread")
def test_an_uploaded_scikit_learn_regressor_is_judged_on_rmse_against_a_ferry_trained_champion(
    settings: FerrySettings,  # noqa: F811 - the imported fixture
    registry_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    api = Api(registry_url, "diabetes-up")
    request = TrainingRequested(model_name="diabetes-up", dataset="sklearn:diabetes", hyperparameters=QUICK)
    trained = run_training(request, workdir=tmp_path)
    registry = RegistryClient.connect(registry_url, token=REGISTRY_TOKEN, timeout_s=60)
    anonymous = RegistryClient.connect(registry_url, timeout_s=60)
    try:
        with evaluator(settings, registry_url, bake_s=600.0):
            announce(settings, "diabetes-up", trained.path.read_bytes(), regressor=True)
            settle(api, lambda: champion_is(api, 1), "the Ferry-trained v1 as the first champion")
            with pytest.raises(RegistryUnauthorized):
                anonymous.register_artifact("diabetes-up", sklearn_diabetes(), dataset="sklearn:diabetes")
            with pytest.raises(RegistryRefused) as refused:
                registry.register_artifact("diabetes-up", torch_network(10, 3), dataset="sklearn:diabetes")
            assert refused.value.status == 422 and "This is a classifier" in refused.value.message
            uploaded = registry.register_artifact("diabetes-up", sklearn_diabetes(), dataset="sklearn:diabetes")
            settle(api, lambda: champion_is(api, 1, challenger=2), "the upload v2 as the canary")
    finally:
        registry.close()
        anonymous.close()

    version = api.get("/versions/2")  # the refused uploads made no version: the accepted one is v2
    assert version["tags"]["lineage"] == "external" and version["signature"]["task"] == "regression"
    assert version["artifact"]["sha256"] == uploaded.artifact.sha256 and version["signature"]["bin_edges"]
    [evaluation] = api.evaluations(2)
    report = evaluation["report"]
    assert report["task"] == "regression" and report["primary_metric"] == "rmse"
    assert evaluation["decision"] == "promote" and "rmse" in evaluation["reason"]
    assert "vs champion v1" in evaluation["reason"]
    stored = httpx.get(f"{api.base}/versions/2/artifact", timeout=10).content
    values = predict(open_session(stored), DIABETES.test.features)[:, 0].astype(np.float64)
    rmse = float(np.sqrt(np.mean((values - DIABETES.test.labels) ** 2)))
    assert report["candidate"]["metrics"]["rmse"] == pytest.approx(rmse, rel=1e-6)
    assert report["comparison"]["rmse"]["lower_is_better"] and report["comparison"]["rmse"]["non_inferior"]
