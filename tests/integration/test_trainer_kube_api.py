"""The trainer's PyTorchJob path against a real API server (kube-apiserver and etcd built from their Go modules
by tools/kube-apiserver.sh), with the training-operator's pinned CRD installed and the chart's RBAC applied:
creation through the official client as the chart's ServiceAccount, the watch, failure and deletion. No
operator runs here: the test writes the job's status as the operator would. Skipped when the server is not
built; the whole chart's server-side dry-run runs against the same server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.kube import JobGone, KubeJobs
from services.trainer.adapters.pytorchjob import GROUP, PLURAL, VERSION, JobSpec, job_name, manifest
from services.trainer.cluster import ClusterTraining
from shared.artifacts import ArtifactStore
from shared.events import (
    ArtifactRef,
    Hyperparameters,
    ModelTrained,
    Signature,
    TensorSpec,
    TrainingRequested,
    TrainingStatus,
)
from shared.kafka import ListPublisher
from tests.integration.kube_api_support import KubeApi, running_api_server
from tests.integration.test_helm_chart import CHART, FULLNAME, NAMESPACE, VALUES, helm
from tests.support import wait_for
from tools.kube_validate import crd_files

SPEC = JobSpec(image="registry.example/ferry:1", namespace=NAMESPACE, config_maps=(f"{FULLNAME}-settings",))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    with running_api_server(tmp_path_factory.mktemp("kube")) as server:
        for path in crd_files():
            server.install_crd(path)
        client.CoreV1Api(server.admin).create_namespace({"metadata": {"name": NAMESPACE}})
        yield server


def _chart_objects(template: str | None = None) -> list[dict[str, Any]]:
    values = next(path for path in VALUES if path.stem == "gpu-values")  # the values that enable PyTorchJobs
    args = ["template", FULLNAME, CHART, "--namespace", NAMESPACE, "-f", values]
    result = helm(*args, *(["--show-only", template] if template else []))
    assert result.returncode == 0, result.stderr[-3000:]
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def trainer_jobs(api: KubeApi) -> KubeJobs:
    """KubeJobs as the chart's trainer: its ServiceAccount, Role and RoleBinding applied, its token used."""
    objects = _chart_objects("templates/training-jobs.yaml")
    for item in objects:
        _create(api, item)
    [account] = [item["metadata"]["name"] for item in objects if item["kind"] == "ServiceAccount"]
    kubeconfig = api.kubeconfig(api.token_for(NAMESPACE, account), "trainer")
    return KubeJobs.connect(str(kubeconfig), NAMESPACE)


def _create(api: KubeApi, item: dict[str, Any], *, dry_run: bool = False) -> None:
    resources = dynamic.DynamicClient(api.admin).resources.get(api_version=item["apiVersion"], kind=item["kind"])
    namespace = NAMESPACE if resources.namespaced else None
    resources.create(body=item, namespace=namespace, **({"dry_run": "All"} if dry_run else {}))


class Trainer:
    """A trainer's cluster path watching in a thread, publishing into a list."""

    def __init__(self, jobs: KubeJobs, root: Path) -> None:
        self.publisher = ListPublisher()
        self.store = ArtifactStore(str(root / "artifacts"))
        self.completed = CompletedRequests(str(root / "artifacts"))
        self.cluster = ClusterTraining(
            jobs, SPEC, publish=self.publisher.publish, store=self.store, completed=self.completed, watch_timeout_s=5
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.cluster.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Trainer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def states(self, request: TrainingRequested) -> list[str]:
        return [e.state for e in self.publisher.of_type(TrainingStatus) if e.request_id == request.request_id]


def _request(**fields: object) -> TrainingRequested:
    values: dict[str, object] = {"model_name": "digits", "dataset": "sklearn:digits", "world_size": 16}
    return TrainingRequested(**(values | {"hyperparameters": Hyperparameters(epochs=3)} | fields))  # type: ignore[arg-type]


def _operator_says(api: KubeApi, name: str, *conditions: tuple[str, str]) -> None:
    """What the training-operator writes: the job's conditions (type, message), through the status subresource."""
    status = {
        "conditions": [{"type": kind, "status": "True", "reason": kind, "message": msg} for kind, msg in conditions]
    }
    client.CustomObjectsApi(api.admin).patch_namespaced_custom_object_status(
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"status": status}
    )


def test_the_server_stores_the_job_as_built_and_a_redelivery_finds_it(api: KubeApi, trainer_jobs: KubeJobs) -> None:
    """The CRD's structural schema would prune any field it does not know: the stored spec is the one sent."""
    request = _request()
    cluster = ClusterTraining(trainer_jobs, SPEC, publish=ListPublisher().publish, store=None, completed=None)  # type: ignore[arg-type]
    name = cluster.submit(request)
    assert cluster.submit(request) == name
    stored = trainer_jobs.get(name)
    assert _missing(manifest(request, SPEC)["spec"], stored["spec"]) == []  # the server only adds defaults
    assert [
        item["metadata"]["name"] for item in trainer_jobs.list("app.kubernetes.io/managed-by=ferry-trainer")[0]
    ] == [name]
    trainer_jobs.delete(name)
    with pytest.raises(JobGone):
        trainer_jobs.get(name)


def test_the_trainers_role_allows_pytorchjobs_alone(trainer_jobs: KubeJobs) -> None:
    core = client.CoreV1Api(trainer_jobs._api.api_client)
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_pod(NAMESPACE)
    assert refused.value.status == 403
    with pytest.raises(ApiException) as elsewhere:
        client.CustomObjectsApi(trainer_jobs._api.api_client).list_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL
        )
    assert elsewhere.value.status == 403


def test_the_watch_turns_the_jobs_conditions_into_statuses(
    api: KubeApi, trainer_jobs: KubeJobs, tmp_path: Path
) -> None:
    succeeded, failed, deleted = _request(), _request(), _request()
    with Trainer(trainer_jobs, tmp_path) as trainer:
        for request in (succeeded, failed, deleted):
            name = trainer.cluster.submit(request)
            _operator_says(api, name, ("Created", ""), ("Running", ""))
        for request in (succeeded, failed, deleted):
            wait_for(lambda r=request: trainer.states(r) == ["progress"], what="progress from Running")
        _pods_record(trainer, succeeded)
        _operator_says(api, job_name(succeeded.request_id), ("Succeeded", ""))
        _operator_says(api, job_name(failed.request_id), ("Failed", "PyTorchJob failed: 1 Master replica(s) failed"))
        client.CustomObjectsApi(api.admin).delete_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, job_name(deleted.request_id)
        )
        for request in (succeeded, failed, deleted):
            wait_for(lambda r=request: len(trainer.states(r)) == 2, what="the job's ending")
            wait_for(lambda r=request: _gone(trainer_jobs, job_name(r.request_id)), what="the announced job deleted")
    assert trainer.states(succeeded) == ["progress", "completed"]
    [trained] = trainer.publisher.of_type(ModelTrained)
    assert trained.request_id == succeeded.request_id
    endings = {e.request_id: e.reason for e in trainer.publisher.of_type(TrainingStatus) if e.state == "failed"}
    assert endings[failed.request_id] == "PyTorchJob failed: 1 Master replica(s) failed"
    assert "was deleted before it finished" in str(endings[deleted.request_id])


def test_a_restarted_trainer_announces_what_ended_while_it_was_away(
    api: KubeApi, trainer_jobs: KubeJobs, tmp_path: Path
) -> None:
    request = _request()
    first = Trainer(trainer_jobs, tmp_path)
    name = first.cluster.submit(request)
    _pods_record(first, request)
    _operator_says(api, name, ("Running", ""), ("Succeeded", ""))  # no trainer watches
    with Trainer(trainer_jobs, tmp_path) as second:
        wait_for(lambda: second.states(request) == ["completed"], what="the ending announced after a restart")
        wait_for(lambda: _gone(trainer_jobs, name), what="the job deleted")


def test_the_whole_chart_passes_a_server_side_dry_run(api: KubeApi) -> None:
    """Every object the chart renders with each values file, as the API server would admit it (dry run)."""
    failures = []
    for values in VALUES:
        result = helm("template", FULLNAME, CHART, "--namespace", NAMESPACE, "-f", values)
        assert result.returncode == 0, result.stderr[-2000:]
        for item in (document for document in yaml.safe_load_all(result.stdout) if document):
            try:
                _create(api, item, dry_run=True)
            except ApiException as error:
                if error.status != 409:  # the RBAC objects applied above exist already: that is no refusal
                    failures.append(f"{values.stem} {item['kind']}/{item['metadata']['name']}: {error.body[:500]}")
    assert failures == []


def _missing(sent: Any, stored: Any, path: str = "spec") -> list[str]:
    """The paths of what was sent and is not stored as sent (what a schema's pruning would drop or change)."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        return [miss for key, value in sent.items() for miss in _missing(value, stored.get(key), f"{path}.{key}")]
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        return [
            miss for i, pair in enumerate(zip(sent, stored, strict=True)) for miss in _missing(*pair, f"{path}[{i}]")
        ]
    return [] if sent == stored else [path]


def _gone(jobs: KubeJobs, name: str) -> bool:
    try:
        jobs.get(name)
    except JobGone:
        return True
    return False


def _pods_record(trainer: Trainer, request: TrainingRequested) -> None:
    """What the job's rank 0 leaves: the artifact in the store and its record by request id."""
    uri, sha256, size = trainer.store.put_bytes(b"onnx bytes of " + request.request_id.encode())
    trainer.completed.put(
        ModelTrained(
            model_name=request.model_name,
            request_id=request.request_id,
            artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
            signature=Signature(
                inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 64])],
                outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 10])],
            ),
            dataset=request.dataset,
            split_id="v1-test",
            arch=request.arch,
            hyperparameters=request.hyperparameters,
        )
    )
