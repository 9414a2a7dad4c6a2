"""An uploaded model, once checked and stored, is judged by the evaluator like any candidate: against a
champion with the trainer's signature, on the held-out split (services.evaluator.service.evaluate); an uploaded
regressor on RMSE against a regressor champion."""

from __future__ import annotations

from pathlib import Path

from evaluator_onnx import fitted_diabetes, fitted_digits
from external_models import sklearn_diabetes, sklearn_digits, torch_network

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.policy import Policy
from services.evaluator.domain.records import VersionRecord
from services.evaluator.service import DatasetSplits, evaluate
from services.registry.uploads import check_upload
from shared.artifacts import ArtifactStore
from shared.datasets import Dataset, load_dataset, split, split_id
from shared.events import ArtifactRef, Signature
from shared.onnx import open_session, predict, signature_of
from shared.regression import quantile_edges

DIGITS = load_dataset("sklearn:digits")
DIABETES = load_dataset("sklearn:diabetes")


def record(
    store: ArtifactStore, version: int, data: bytes, status: str, *, dataset: Dataset = DIGITS, signature: Signature
) -> VersionRecord:
    uri, sha256, size = store.put_bytes(data)
    return VersionRecord(
        model_name=dataset.name.split(":")[-1],
        version=version,
        status=status,
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature=signature,
        dataset=dataset.name,
        split_id=split_id(dataset),
    )


def judged(tmp_path: Path, candidate: bytes, champion: bytes, dataset: Dataset = DIGITS) -> str:
    """The verdict on the upload ``candidate`` (as checked and announced) against ``champion`` (as the trainer
    announces one: a regressor with the deciles of its validation predictions as its bins)."""
    store = ArtifactStore(str(tmp_path))
    stored = check_upload(candidate, dataset, max_bytes=2**24)
    theirs = signature_of(open_session(champion))
    if dataset.is_regression:
        values = predict(open_session(champion), split(dataset).validation.features)
        theirs = theirs.regressor(quantile_edges(values))
    evaluation = evaluate(
        record(store, 2, stored.data, "registered", dataset=dataset, signature=stored.signature),
        record(store, 1, champion, "champion", dataset=dataset, signature=theirs),
        loader=ModelLoader(store),
        splits=DatasetSplits(),
        policy=Policy(),
        latency_runs=20,
    )
    return f"{evaluation.verdict.decision}: {evaluation.verdict.reason}"


def test_a_scikit_learn_upload_beats_a_weak_ferry_champion(tmp_path: Path) -> None:
    verdict = judged(tmp_path, sklearn_digits(), fitted_digits(rows=60))
    assert verdict.startswith("promote"), verdict


def test_an_untrained_torch_upload_is_rejected_on_quality_not_on_its_signature(tmp_path: Path) -> None:
    verdict = judged(tmp_path, torch_network(names=("x", "y")), fitted_digits())
    assert verdict.startswith("reject") and "signature" not in verdict, verdict


def test_a_scikit_learn_regressor_upload_is_judged_on_rmse_against_a_regressor_champion(tmp_path: Path) -> None:
    verdict = judged(tmp_path, sklearn_diabetes("ridge"), fitted_diabetes(features=3), DIABETES)
    assert verdict.startswith("promote") and "rmse" in verdict and "vs champion v1" in verdict, verdict
    worse = judged(tmp_path, fitted_diabetes(features=2, flat=True), fitted_diabetes(), DIABETES)
    assert worse.startswith("reject") and "rmse" in worse and "signature" not in worse, worse
