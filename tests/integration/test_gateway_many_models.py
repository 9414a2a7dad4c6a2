"""Many models on one real gateway with a small memory budget: evicted models are answered (loaded again),
``/status``, the repository index and the metrics say what was evicted and why, a pinned version rolled
away from still answers, and the repository API's load and unload take the admin token."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from gateway_helpers import Served, infer_json, served_gateway, store_version, total
from support import wait_for

from services.gateway.budget import estimate_bytes
from services.gateway.domain import Deployment, VersionSpec
from shared.artifacts import ArtifactStore

pytestmark = pytest.mark.integration
TOKEN = secrets.token_urlsafe(16)
MODELS = ["m0", "m1", "m2", "m3"]
ROW = [[0.1] * 8]


def loaded(served: Served) -> set[str]:
    memory = httpx.get(f"{served.url}/status", timeout=10).json()["memory"]
    return {f"{entry['model']}:{entry['version']}" for entry in memory["resident"]}


def index(served: Served) -> dict[tuple[str, str], dict[str, str]]:
    entries = httpx.post(f"{served.url}/v2/repository/index", timeout=10).json()
    return {(entry["name"], entry.get("version", "")): entry for entry in entries}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Four models and a budget that holds two of their sessions, started lazily."""
    tmp_path = tmp_path_factory.mktemp("many")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    specs = {name: store_version(store, 1, seed=index) for index, name in enumerate(MODELS)}
    cost = estimate_bytes(specs["m0"].size_bytes, 192 * 1024)
    with served_gateway(
        tmp_path,
        [Deployment(name, 1, champion=spec) for name, spec in specs.items()],
        store,
        lazy_start=True,
        memory_budget_mb=2.5 * cost / 2**20,
        protect_window_s=0,
        admin_token=TOKEN,
    ) as gateway:
        yield gateway  # type: ignore[misc]


def test_a_lazy_start_warms_up_to_the_budget_and_evicted_models_are_answered(served: Served) -> None:
    wait_for(lambda: len(loaded(served)) == 2, what="the background warm-up of two models")
    with served.client() as client:
        for name in [*MODELS, *MODELS]:  # each request past the second loads one and evicts another
            answer = client.post(f"/v2/models/{name}/infer", json=infer_json(ROW))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "1"
    status = httpx.get(f"{served.url}/status", timeout=10).json()
    memory = status["memory"]
    assert memory["evictions"]["budget"] >= 6 and memory["loads"]["ok"] >= 8
    assert memory["budget"]["cpu"]["used_bytes"] <= memory["budget"]["cpu"]["limit_bytes"]
    assert {entry["reason"] for entry in memory["recent_evictions"]} == {"budget"}
    states = {name: status["models"][name]["champion"]["state"] for name in MODELS}
    assert sorted(states.values()) == ["evicted", "evicted", "loaded", "loaded"]
    evicted = [name for name, state in states.items() if state == "evicted"]
    assert index(served)[(evicted[0], "1")] == {
        "name": evicted[0],
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "evicted (budget): loads again on its next request",
    }
    assert total(served.url, "ferry_gateway_evictions_total", reason="budget") >= 6
    assert total(served.url, "ferry_gateway_loads_total", outcome="ok") >= 8
    assert total(served.url, "ferry_gateway_cold_start_seconds_count") >= 8
    used = total(served.url, "ferry_gateway_memory_used_bytes", device="cpu")
    assert used == memory["budget"]["cpu"]["used_bytes"] and used > 0
    limit = memory["budget"]["cpu"]["limit_bytes"]
    assert total(served.url, "ferry_gateway_memory_budget_bytes", device="cpu") == limit
    assert total(served.url, "ferry_gateway_resident_versions", device="cpu") == 2


def test_repository_load_and_unload_need_the_token_and_change_the_index(served: Served) -> None:
    evicted = next(name for name in MODELS if f"{name}:1" not in loaded(served))
    with served.client() as client:
        assert client.post(f"/v2/repository/models/{evicted}/load").status_code == 401
        assert client.post(f"/v2/repository/models/{evicted}/unload").status_code == 401
        assert index(served)[(evicted, "1")]["state"] == "UNAVAILABLE"
        admin = {"Authorization": f"Bearer {TOKEN}"}
        answer = client.post(f"/v2/repository/models/{evicted}/load", headers=admin)
        assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
        assert index(served)[(evicted, "1")]["state"] == "READY"
        assert client.post(f"/v2/repository/models/{evicted}/unload", headers=admin).status_code == 200
        assert index(served)[(evicted, "1")]["reason"] == "unloaded by an operator on this gateway"
        assert client.post(f"/v2/models/{evicted}/infer", json=infer_json(ROW)).status_code == 404
        assert client.post(f"/v2/repository/models/{evicted}/load", headers=admin).status_code == 200
        assert client.post(f"/v2/models/{evicted}/infer", json=infer_json(ROW)).status_code == 200


def test_a_pinned_version_rolled_away_from_still_answers(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    v1, v2, _ = (store_version(store, number) for number in (1, 2, 3))
    registry: dict[int, VersionSpec] = {1: v1, 2: v2}  # v3: archived there, so the registry answers None

    def find_version(name: str, number: int) -> VersionSpec | None:
        return registry.get(number) if name == "m" else None

    with served_gateway(tmp_path, [Deployment("m", 1, champion=v2)], store, find_version=find_version) as gateway:
        assert gateway.apply(Deployment("m", 2, champion=v1)) == "applied"  # the rollback: v2 is released
        with gateway.client() as client:
            answer = client.post("/v2/models/m/versions/2/infer", json=infer_json(ROW))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "2"
            assert client.post("/v2/models/m/infer", json=infer_json(ROW)).json()["model_version"] == "1"
            for unknown in (3, 9):
                refused = client.post(f"/v2/models/m/versions/{unknown}/infer", json=infer_json(ROW))
                assert refused.status_code == 404 and "has no loaded version" in refused.json()["error"]
        status = httpx.get(f"{gateway.url}/status", timeout=10).json()
        assert status["pinned"] == [{"model": "m", "version": 2, "state": "loaded"}]
        assert index(gateway)[("m", "2")]["state"] == "READY"
        assert httpx.get(f"{gateway.url}/v2/models/m/versions/2/ready", timeout=10).json()["ready"] is True
