"""The trainer's PyTorchJob, short of a cluster: the manifest it creates validated against the pinned
training-operator CRD's schema, and the job's own command (torchrun with the Ferry entrypoint) run for real
over two gloo ranks, its artifact then verified and announced by the watching trainer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.pytorchjob import ENTRYPOINT, REQUEST_ENV, JobSpec, job_name, manifest
from services.trainer.cluster import ClusterTraining
from shared.artifacts import ArtifactStore
from shared.events import Compression, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus
from shared.kafka import ListPublisher
from tests.unit.pytorchjob_fakes import FakeJobs
from tools.kube_validate import CrdSchemas, crd_files

SPEC = JobSpec(
    image="registry.example/ferry:1.0-cuda",
    namespace="ml",
    service_account="ferry-training-job",
    config_maps=("ferry-settings",),
    secrets=("ferry-object-store",),
    gpus=1,
)


def _request(**fields: object) -> TrainingRequested:
    values: dict[str, object] = {
        "model_name": "iris",
        "dataset": "sklearn:iris",
        "world_size": 2,
        "hyperparameters": Hyperparameters(epochs=8, hidden_sizes=[16], learning_rate=1e-2),
    }
    return TrainingRequested(**(values | fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("world_size", [1, 2, 16])
def test_the_manifest_validates_against_the_pinned_crd(world_size: int) -> None:
    schemas = CrdSchemas(crd_files())
    request = _request(world_size=world_size, compression=Compression(quantize="int8"))
    assert schemas.errors(manifest(request, SPEC)) == []


def test_the_crd_schema_catches_a_wrong_manifest() -> None:
    """The validation above can fail: a misspelt field and a wrong type are refused."""
    schemas = CrdSchemas(crd_files())
    job = manifest(_request(), SPEC)
    job["spec"]["runPolicy"]["backofLimit"] = 3
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    errors = schemas.errors(job)
    assert any("backofLimit" in error for error in errors) and any("replicas" in error for error in errors)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_job(request: TrainingRequested, home: Path) -> subprocess.CompletedProcess[str]:
    """The pods' command on one node with two processes: torchrun, then the Ferry entrypoint."""
    [container] = manifest(request, SPEC)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["-m", ENTRYPOINT]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--node-rank=0"]
    command += ["--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", ENTRYPOINT]
    env = os.environ | {
        REQUEST_ENV: request.model_dump_json(),
        "FERRY_HOME": str(home),
        "FERRY_ARTIFACT_ROOT": str(home / "artifacts"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def _trainer(home: Path, jobs: FakeJobs) -> tuple[ClusterTraining, ListPublisher]:
    publisher = ListPublisher()
    store = ArtifactStore(str(home / "artifacts"))
    completed = CompletedRequests(str(home / "artifacts"))
    return ClusterTraining(jobs, SPEC, publish=publisher.publish, store=store, completed=completed), publisher


def test_the_jobs_ranks_train_and_the_watching_trainer_announces_their_artifact(tmp_path: Path) -> None:
    request = _request()
    jobs = FakeJobs()
    trainer, publisher = _trainer(tmp_path, jobs)
    trainer.submit(request)
    finished = _run_job(request, tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    jobs.set_condition(job_name(request.request_id), "Succeeded")
    trainer.resync()
    [trained] = publisher.of_type(ModelTrained)
    assert trained.request_id == request.request_id and trained.artifact.format == "onnx"
    assert trained.metrics["val_accuracy"] > 0.6 and trained.signature.inputs[0].shape == [-1, 4]
    assert len(ArtifactStore(str(tmp_path / "artifacts")).fetch(trained.artifact.sha256)) == trained.artifact.size_bytes
    assert [event.state for event in publisher.of_type(TrainingStatus)] == ["completed"]


def test_a_request_the_ranks_cannot_train_fails_the_job_with_its_reason(tmp_path: Path) -> None:
    request = _request(arch="cnn")  # iris is tabular: every rank refuses the plan
    jobs = FakeJobs()
    trainer, publisher = _trainer(tmp_path, jobs)
    trainer.submit(request)
    finished = _run_job(request, tmp_path)
    assert finished.returncode != 0
    jobs.set_condition(job_name(request.request_id), "Failed", "1 Master replica(s) failed")
    trainer.resync()
    [failed] = publisher.of_type(TrainingStatus)
    assert failed.state == "failed" and "needs image-shaped data" in str(failed.reason)
