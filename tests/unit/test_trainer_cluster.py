"""The trainer's cluster path against a fake API server: creation, idempotency, the watch turned into
statuses and ModelTrained, failures and deletions with their reason, a restart that carries on."""

from __future__ import annotations

import threading
from pathlib import Path

from services.trainer.adapters.kube import ClusterUnavailable
from services.trainer.adapters.pytorchjob import REQUEST_ANNOTATION, REQUEST_ENV, job_name, manifest, read_job
from services.trainer.cluster import status_event_id
from services.trainer.handlers import model_trained_event_id
from shared.events import ModelTrained, TrainingRequested, TrainingStatus
from tests.unit.pytorchjob_fakes import SPEC, FakeJobs, World
from tests.unit.pytorchjob_fakes import training_request as _request


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


def test_a_labelled_object_without_a_request_is_ignored(tmp_path: Path) -> None:
    world = World(tmp_path)
    job = manifest(_request(), SPEC)
    del job["metadata"]["annotations"][REQUEST_ANNOTATION]
    world.jobs.create(job)
    world.jobs.set_condition(job["metadata"]["name"], "Succeeded")
    world.resync_then_watch()
    assert world.publisher.events == [] and len(world.jobs.jobs) == 1
