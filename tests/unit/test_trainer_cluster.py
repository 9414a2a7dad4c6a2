"""The trainer's cluster path against a fake API server: creation, idempotency, the watch turned into
statuses and ModelTrained, failures and deletions with their reason, a restart that carries on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.kube import ClusterUnavailable, KubeJobs
from services.trainer.adapters.pytorchjob import (
    REQUEST_ANNOTATION,
    REQUEST_ENV,
    JobSpec,
    job_name,
    manifest,
    read_job,
)
from services.trainer.adapters.teachers import StaticTeachers
from services.trainer.cluster import ClusterTraining, status_event_id
from services.trainer.handlers import TrainerDeps, handle_training_requested, model_trained_event_id
from services.trainer.service import JobLimits
from services.trainer.settings import TrainerSettings
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.events import (
    ArtifactRef,
    Compression,
    Hyperparameters,
    ModelTrained,
    Signature,
    TensorSpec,
    TrainingRequested,
    TrainingStatus,
    utc_now,
)
from shared.kafka import ListPublisher, is_transient
from tests.unit.pytorchjob_fakes import FakeJobs

META = EventMeta(event_id="e1", source="test", time=utc_now(), traceparent=None, type_name=TrainingRequested.type_name)
SPEC = JobSpec(image="registry.example/ferry:1", namespace="ml", config_maps=("ferry-settings",), secrets=("s3",))
SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
)


def _request(world_size: int = 4, **fields: object) -> TrainingRequested:
    values: dict[str, object] = {
        "model_name": "iris",
        "dataset": "sklearn:iris",
        "world_size": world_size,
        "hyperparameters": Hyperparameters(epochs=5, hidden_sizes=[8]),
    }
    return TrainingRequested(**(values | fields))  # type: ignore[arg-type]


class World:
    """A trainer's cluster path over a fake API, a folder store and a list publisher."""

    def __init__(self, root: Path, jobs: FakeJobs | None = None) -> None:
        self.root = root
        self.jobs = jobs or FakeJobs()
        self.publisher = ListPublisher()
        self.store = ArtifactStore(str(root / "artifacts"))
        self.completed = CompletedRequests(str(root / "artifacts"))
        self.cluster = ClusterTraining(
            self.jobs, SPEC, publish=self.publisher.publish, store=self.store, completed=self.completed
        )

    def restarted(self) -> World:
        """Another trainer process (a restart, or a second replica) on the same cluster and store."""
        return World(self.root, self.jobs)

    def states(self) -> list[str]:
        return [event.state for event in self.publisher.of_type(TrainingStatus)]

    def resync_then_watch(self) -> None:
        self.watch_from(self.cluster.resync())

    def watch_from(self, version: str) -> None:
        for event in self.jobs.watch("app.kubernetes.io/managed-by=ferry-trainer", version, 1):
            self.cluster.observe(event.type, event.job)

    def pods_record(self, request: TrainingRequested, artifact: bytes = b"onnx bytes") -> ModelTrained:
        """What rank 0 of the job does on success: the artifact in the store, its record by request id."""
        uri, sha256, size = self.store.put_bytes(artifact)
        trained = ModelTrained(
            model_name=request.model_name,
            request_id=request.request_id,
            artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
            signature=SIGNATURE,
            dataset=request.dataset,
            split_id="v1-test",
            arch=request.arch,
            hyperparameters=request.hyperparameters,
        )
        self.completed.put(trained)
        return trained


def test_the_manifest_carries_the_request_and_a_fixed_entrypoint() -> None:
    request = _request(world_size=3)
    job = manifest(request, SPEC)
    assert job["metadata"]["name"] == job_name(request.request_id) and job["metadata"]["namespace"] == "ml"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    [container] = specs["Worker"]["template"]["spec"]["containers"]
    assert container["name"] == "pytorch" and container["image"] == SPEC.image
    assert container["command"] == ["torchrun"] and container["args"][-2:] == ["-m", "services.trainer.entrypoints.job"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert TrainingRequested.model_validate_json(env[REQUEST_ENV]) == request
    assert container["envFrom"] == [{"configMapRef": {"name": "ferry-settings"}}, {"secretRef": {"name": "s3"}}]
    assert read_job(job).request == request and read_job(job).phase == "pending"
    assert "Worker" not in manifest(_request(world_size=1), SPEC)["spec"]["pytorchReplicaSpecs"]


def test_job_names_are_dns_labels_derived_from_the_request_id() -> None:
    name = job_name("a request id with spaces/and slashes" * 5)
    assert len(name) <= 63 and name.replace("-", "").isalnum() and name == name.lower()
    assert job_name("r1") == job_name("r1") != job_name("r2")


def test_a_redelivered_request_finds_its_job_instead_of_making_a_second(tmp_path: Path) -> None:
    world = World(tmp_path)
    request = _request()
    name = world.cluster.submit(request)
    assert world.cluster.submit(request) == name
    assert world.restarted().cluster.submit(request) == name  # a second trainer replica
    assert list(world.jobs.jobs) == [name]


def test_a_large_world_goes_to_the_cluster_and_a_small_one_stays_local(tmp_path: Path) -> None:
    world = World(tmp_path)
    deps = _deps(tmp_path, world)
    big = _request(world_size=4)
    handle_training_requested(big, META, deps=deps)
    assert world.states() == ["started"]
    assert list(world.jobs.jobs) == [job_name(big.request_id)]
    assert world.publisher.of_type(ModelTrained) == []  # the job trains, not this process


def test_a_request_the_job_would_refuse_fails_before_any_job_exists(tmp_path: Path) -> None:
    world = World(tmp_path)
    deps = _deps(tmp_path, world)
    world.cluster.max_world_size = 8
    handle_training_requested(_request(world_size=9), META, deps=deps)
    handle_training_requested(_request(dataset="sklearn:no-such-set"), META, deps=deps)
    distill = _request(compression=Compression(distill_from="champion"))
    handle_training_requested(distill, META, deps=deps)
    failed = world.publisher.of_type(TrainingStatus)
    assert [event.state for event in failed] == ["failed"] * 3
    assert "exceeds this trainer's limit of 8" in str(failed[0].reason)
    assert "distillation" in str(failed[2].reason)
    assert world.jobs.jobs == {}


def test_without_a_cluster_a_large_world_is_refused_as_before(tmp_path: Path) -> None:
    world = World(tmp_path)
    deps = _deps(tmp_path, world, cluster=False)
    handle_training_requested(_request(world_size=4), META, deps=deps)
    assert world.states() == ["started", "failed"]
    failed = world.publisher.of_type(TrainingStatus)[-1]
    assert "exceeds this trainer's limit of 2" in str(failed.reason)
    assert world.jobs.jobs == {}


def test_a_succeeded_job_is_verified_and_announced_like_a_local_run(tmp_path: Path) -> None:
    world = World(tmp_path)
    request = _request()
    started = world.cluster.resync()
    name = world.cluster.submit(request)
    world.jobs.set_condition(name, "Created")
    world.jobs.set_condition(name, "Running")
    record = world.pods_record(request)
    world.jobs.set_condition(name, "Succeeded")
    before_deletion = str(world.jobs.version)
    world.watch_from(started)
    assert world.states() == ["progress", "completed"]
    [trained] = world.publisher.of_type(ModelTrained)
    assert trained == record
    assert world.publisher.event_ids[world.publisher.events.index(trained)] == model_trained_event_id(
        request.request_id
    )
    assert world.jobs.jobs == {}  # announced, then deleted
    world.watch_from(before_deletion)  # its own DELETED event changes nothing
    assert world.states() == ["progress", "completed"]


def test_a_failed_job_becomes_a_failed_status_with_the_pods_reason(tmp_path: Path) -> None:
    world = World(tmp_path)
    request = _request()
    name = world.cluster.submit(request)
    world.completed.put_failure(request.request_id, "loss became NaN at epoch 3; lower the learning rate")
    world.jobs.set_condition(name, "Failed", "PyTorchJob failed because 1 Master replica(s) failed.")
    world.resync_then_watch()
    [failed] = world.publisher.of_type(TrainingStatus)
    assert failed.state == "failed" and failed.reason == "loss became NaN at epoch 3; lower the learning rate"
    assert world.publisher.event_ids[0] == status_event_id(request.request_id, "failed")
    assert world.jobs.jobs == {}


def test_a_job_failed_by_the_operator_reports_the_operators_reason(tmp_path: Path) -> None:
    world = World(tmp_path)
    name = world.cluster.submit(_request())
    world.jobs.set_condition(name, "Failed", "PyTorchJob ferry-train-x is failed because it ran past its deadline")
    world.resync_then_watch()
    [failed] = world.publisher.of_type(TrainingStatus)
    assert failed.state == "failed" and "ran past its deadline" in str(failed.reason)


def test_a_job_deleted_while_it_runs_becomes_failed(tmp_path: Path) -> None:
    world = World(tmp_path)
    name = world.cluster.submit(_request())
    world.jobs.set_condition(name, "Running")
    version = world.cluster.resync()
    world.jobs.delete(name)  # a person, or a namespace going away
    world.watch_from(version)
    assert world.states() == ["progress", "failed"]
    reason = world.publisher.of_type(TrainingStatus)[-1].reason
    assert reason == f"the PyTorchJob {name} was deleted before it finished"


def test_a_job_deleted_while_no_watch_ran_becomes_failed_on_the_next_list(tmp_path: Path) -> None:
    world = World(tmp_path)
    name = world.cluster.submit(_request())
    world.cluster.resync()
    world.jobs.delete(name)
    world.jobs.compact()  # the DELETED event is gone with the history: only the list can tell
    world.cluster.resync()
    assert world.states() == ["failed"]


def test_a_success_without_a_sound_artifact_is_a_failure(tmp_path: Path) -> None:
    world = World(tmp_path)
    lost, corrupt = _request(), _request()
    for request in (lost, corrupt):
        world.jobs.set_condition(world.cluster.submit(request), "Running")
    record = world.pods_record(corrupt, b"the real bytes")
    artifact = Path(record.artifact.uri.removeprefix("file://"))
    artifact.chmod(0o644)
    artifact.write_bytes(b"the wrong bytes")
    for request in (lost, corrupt):
        world.jobs.set_condition(job_name(request.request_id), "Succeeded")
    world.resync_then_watch()
    failures = {event.request_id: event.reason for event in world.publisher.of_type(TrainingStatus)}
    assert "recorded no artifact" in str(failures[lost.request_id])
    assert "failed verification" in str(failures[corrupt.request_id])
    assert world.publisher.of_type(ModelTrained) == []


def test_a_restarted_trainer_carries_on_with_the_jobs_it_started(tmp_path: Path) -> None:
    before = World(tmp_path)
    finished, running = _request(), _request()
    for request in (finished, running):
        before.jobs.set_condition(before.cluster.submit(request), "Running")
    before.resync_then_watch()
    assert before.states() == ["progress", "progress"]
    # The trainer stops; meanwhile one job ends. Its successor lists the jobs by their label.
    before.pods_record(finished)
    before.jobs.set_condition(job_name(finished.request_id), "Succeeded")
    after = before.restarted()
    after.cluster.resync()
    assert [(event.request_id, event.state) for event in after.publisher.of_type(TrainingStatus)] == [
        (finished.request_id, "completed"),
        (running.request_id, "progress"),
    ]
    after.jobs.set_condition(job_name(running.request_id), "Failed", "evicted")
    after.resync_then_watch()
    assert after.states()[-1] == "failed" and after.jobs.jobs == {}


def test_the_watcher_lists_again_when_its_version_is_gone_and_outlives_an_outage(tmp_path: Path) -> None:
    stop = threading.Event()
    world = World(tmp_path, FakeJobs(stop_when_idle=stop))
    request = _request()
    name = world.cluster.submit(request)
    world.jobs.failures.append(ClusterUnavailable("the API server answered 503"))
    world.jobs.set_condition(name, "Running")
    world.cluster.run(stop)  # the first list fails; the second one sees the job running
    assert world.states() == ["progress"] and world.jobs.lists == 2
    world.jobs.set_condition(name, "Failed", "evicted")
    world.jobs.compact()
    stop.clear()
    world.cluster.run(stop)
    assert world.states() == ["progress", "failed"]


def test_an_unreachable_api_server_is_transient_for_the_consumer_loop() -> None:
    assert is_transient(ClusterUnavailable("the Kubernetes API server is unreachable"))


def test_a_labelled_object_without_a_request_is_ignored(tmp_path: Path) -> None:
    world = World(tmp_path)
    job = manifest(_request(), SPEC)
    del job["metadata"]["annotations"][REQUEST_ANNOTATION]
    world.jobs.create(job)
    world.jobs.set_condition(job["metadata"]["name"], "Succeeded")
    world.resync_then_watch()
    assert world.publisher.events == [] and len(world.jobs.jobs) == 1


def test_a_cluster_needs_the_image_its_pods_run() -> None:
    with pytest.raises(ValueError, match="FERRY_TRAINER_JOB_IMAGE"):
        TrainerSettings(cluster="in-cluster")
    assert TrainerSettings(cluster="/etc/kubeconfig", job_image="ferry:1").cluster_enabled
    assert not TrainerSettings().cluster_enabled


def _deps(root: Path, world: World, *, cluster: bool = True) -> TrainerDeps:
    return TrainerDeps(
        store=world.store,
        publish=world.publisher.publish,
        teachers=StaticTeachers(),  # type: ignore[arg-type]
        completed=world.completed,
        work_root=root / "work",
        limits=JobLimits(budget_s=120, max_world_size=2),
        cluster=world.cluster if cluster else None,
    )


class RefusingJobs(FakeJobs):
    """An API server that answers as the outside world does: away (transient), or 403 (for good)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def create(self, job: dict[str, object]) -> dict[str, object]:  # type: ignore[override]
        raise self.error


def test_an_unreachable_api_server_is_retried_and_a_refusal_is_reported_then_dead_lettered(tmp_path: Path) -> None:
    away = World(tmp_path, RefusingJobs(ClusterUnavailable("the Kubernetes API server answered 503")))
    with pytest.raises(ClusterUnavailable):
        handle_training_requested(_request(), META, deps=_deps(tmp_path, away))
    assert "failed" not in away.states()  # the consumer loop retries; nothing is over yet
    forbidden = World(tmp_path, RefusingJobs(PermissionError("pytorchjobs is forbidden")))
    with pytest.raises(PermissionError):
        handle_training_requested(_request(), META, deps=_deps(tmp_path, forbidden))
    assert forbidden.states() == ["started", "failed"]
    assert "forbidden" in str(forbidden.publisher.of_type(TrainingStatus)[-1].reason)


def test_the_kubeconfigs_token_is_sent(tmp_path: Path) -> None:
    """kubernetes 36.0.0's loader and its requests disagree on where the token is; every request must carry it."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: the-token}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    jobs = KubeJobs.connect(str(kubeconfig), "ml")
    headers: dict[str, str] = {}
    jobs._api.api_client.update_params_for_auth(headers, [], ["BearerToken"])
    assert headers == {"authorization": "Bearer the-token"}
