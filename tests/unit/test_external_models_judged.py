"""An uploaded model, once checked and stored, is judged by the evaluator like any candidate: against a
champion with the trainer's signature, on the held-out split (services.evaluator.service.evaluate)."""

from __future__ import annotations

from pathlib import Path

from evaluator_onnx import fitted_digits
from external_models import sklearn_digits, torch_network

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.policy import Policy
from services.evaluator.domain.records import VersionRecord
from services.evaluator.service import DatasetSplits, evaluate
from services.registry.uploads import check_upload
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split_id
from shared.events import ArtifactRef
from shared.onnx import open_session, signature_of

DIGITS = load_dataset("sklearn:digits")


def record(store: ArtifactStore, version: int, data: bytes, status: str) -> VersionRecord:
    uri, sha256, size = store.put_bytes(data)
    return VersionRecord(
        model_name="digits",
        version=version,
        status=status,
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature=signature_of(open_session(data)),
        dataset="sklearn:digits",
        split_id=split_id(DIGITS),
    )


def judged(tmp_path: Path, candidate: bytes, champion: bytes) -> str:
    store = ArtifactStore(str(tmp_path))
    stored = check_upload(candidate, DIGITS, max_bytes=2**24).data
    evaluation = evaluate(
        record(store, 2, stored, "registered"),
        record(store, 1, champion, "champion"),
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
