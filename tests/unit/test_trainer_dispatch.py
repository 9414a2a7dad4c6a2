"""Which requests the trainer hands to the cluster, what it refuses first, how API server failures end, and
the settings and credentials of the cluster path."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer.adapters.kube import ClusterUnavailable, KubeJobs
from services.trainer.adapters.pytorchjob import job_name
from services.trainer.adapters.teachers import StaticTeachers
from services.trainer.handlers import TrainerDeps, handle_training_requested
from services.trainer.service import JobLimits
from services.trainer.settings import TrainerSettings
from shared.envelope import EventMeta
from shared.events import Compression, ModelTrained, TrainingRequested, TrainingStatus, utc_now
from shared.kafka import is_transient
from tests.unit.pytorchjob_fakes import FakeJobs, World
from tests.unit.pytorchjob_fakes import training_request as _request

META = EventMeta(event_id="e1", source="test", time=utc_now(), traceparent=None, type_name=TrainingRequested.type_name)


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


def test_an_unreachable_api_server_is_transient_for_the_consumer_loop() -> None:
    assert is_transient(ClusterUnavailable("the Kubernetes API server is unreachable"))


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
