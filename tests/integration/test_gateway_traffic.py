"""Traffic shaping and swaps with real ONNX models: canary share and stickiness, shadow, the 429, 503 and
504 paths, fallback, a corrupt artifact refused, and a hot swap under concurrent load with zero errors."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gateway_helpers import Served, infer_json, served_gateway, store_version, total
from support import wait_for

from services.gateway.domain import Deployment
from services.gateway.sample_models import classifier_bytes, reference_probabilities
from shared.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

ROW = [0.3, -1.2, 0.8, 0.1, 2.0, -0.4, 0.9, 1.5]
ADMIN = {"Authorization": "Bearer t"}


def post(
    client: httpx.Client, model: str = "m", *, key: str | None = None, path: str = "", **headers: str
) -> httpx.Response:
    if key is not None:
        headers["x-ferry-route-key"] = key
    return client.post(f"/v2/models/{model}{path}/infer", json=infer_json([ROW]), headers=headers)


def test_canary_share_is_within_three_points_and_sticky(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    deployment = Deployment(
        "m", 3, champion=store_version(store, 1), challenger=store_version(store, 2), canary_weight=0.2
    )
    with served_gateway(tmp_path, [deployment], store=store) as served, served.client() as client:
        first = {f"user-{i}": post(client, key=f"user-{i}").json()["model_version"] for i in range(5000)}
        share = Counter(first.values())["2"] / len(first)
        assert abs(share - 0.2) <= 0.03, share
        again = {key: post(client, key=key).json()["model_version"] for key in list(first)[:300]}
        assert again == {key: first[key] for key in again}
        assert total(served.url, "ferry_gateway_requests_total", model="m", version="2", route="canary") >= 900


def test_shadow_mirrors_to_the_challenger_and_never_changes_the_answer(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    deployment = Deployment("m", 2, champion=store_version(store, 1), challenger=store_version(store, 2), shadow=True)
    expected = reference_probabilities(classifier_bytes(8, 3, seed=1), np.array([ROW], np.float32))
    with served_gateway(tmp_path, [deployment], store=store) as served, served.client() as client:
        for i in range(40):
            body = post(client, key=f"k{i}").json()
            assert body["model_version"] == "1"
            np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 3), expected, rtol=1e-5)
        compared = total(served.url, "ferry_gateway_shadow_comparisons_total", model="m", version="2")
        assert compared >= 30  # asynchronous: nearly all are in by now
        assert total(served.url, "ferry_gateway_requests_total", model="m", version="2", route="shadow") >= 30


def test_rate_limit_answers_429_with_retry_after_per_client(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    with (
        served_gateway(
            tmp_path,
            [Deployment("m", 1, champion=store_version(store, 1))],
            store=store,
            rate_limit_rps=0.5,
            rate_limit_burst=3,
        ) as served,
        served.client() as client,
    ):
        statuses = [post(client, **{"x-api-key": "alice"}).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        refused = post(client, **{"x-api-key": "alice"})
        assert int(refused.headers["retry-after"]) >= 1 and "rate limit" in refused.json()["error"]
        assert post(client, **{"x-api-key": "bob"}).status_code == 200
        assert total(served.url, "ferry_gateway_rate_limited_total", model="m") >= 3


def test_bound_on_work_in_flight_sheds_canary_before_champion_with_503(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    deployment = Deployment(
        "m", 2, champion=store_version(store, 1), challenger=store_version(store, 2), canary_weight=0.5
    )
    canary_key = next(f"c{i}" for i in range(100) if _version_for(f"c{i}") == 2)
    with (
        served_gateway(
            tmp_path, [deployment], store=store, admin_token="t", max_inflight=4, canary_share=0.25
        ) as served,
        served.client() as client,
    ):
        for version in (1, 2):
            client.put(f"/admin/faults/m/{version}", json={"delay_ms": 1500}, headers=ADMIN).raise_for_status()
        with ThreadPoolExecutor(4) as pool:
            slow_canary = pool.submit(post, client, key=canary_key)
            _wait_inflight(served, 1)
            shed = post(client, key=canary_key)  # canary may fill a quarter of the bound: one request
            champions = [pool.submit(post, client, key=f"x{i}") for i in range(3) if _version_for(f"x{i}") == 1]
            _wait_inflight(served, 1 + len(champions))
            assert shed.status_code == 503 and int(shed.headers["retry-after"]) >= 1
            assert slow_canary.result().status_code == 200
            assert all(future.result().status_code == 200 for future in champions)
        assert total(served.url, "ferry_gateway_shed_total", model="m", kind="canary") >= 1


def _version_for(key: str) -> int:
    from services.gateway.domain import choose_version

    return choose_version(1, 2, 0.5, key)[0]


def _wait_inflight(served: Served, count: int) -> None:
    # Polled often: the requests counted stay in flight only for their injected delay.
    admission = served.gateway.inference.admission
    wait_for(lambda: admission.inflight >= count, what=f"{count} requests in flight", poll_s=0.01)


def test_deadline_gives_504_and_counts_a_timeout(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    with (
        served_gateway(
            tmp_path, [Deployment("m", 1, champion=store_version(store, 1))], store=store, admin_token="t"
        ) as served,
        served.client() as client,
    ):
        client.put("/admin/faults/m/1", json={"delay_ms": 2000}, headers=ADMIN).raise_for_status()
        response = post(client, **{"x-ferry-deadline-ms": "100"})
        assert response.status_code == 504 and "deadline" in response.json()["error"]
        assert total(served.url, "ferry_gateway_requests_total", model="m", version="1", outcome="timeout") == 1
        client.delete("/admin/faults/m/1", headers=ADMIN).raise_for_status()
        assert post(client).status_code == 200


def test_a_failing_champion_falls_back_to_the_previous_version(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    v1, v2 = store_version(store, 1), store_version(store, 2)
    with served_gateway(tmp_path, [Deployment("m", 1, champion=v1)], store=store, admin_token="t") as served:
        assert served.apply(Deployment("m", 2, champion=v2)) == "applied"
        with served.client() as client:
            client.put("/admin/faults/m/2", json={"error_rate": 1.0}, headers=ADMIN).raise_for_status()
            responses = [post(client) for _ in range(5)]
        assert [r.status_code for r in responses] == [200] * 5
        assert {r.json()["model_version"] for r in responses} == {"1"}
        assert {r.headers["x-ferry-route"] for r in responses} == {"fallback"}
        assert total(served.url, "ferry_gateway_requests_total", model="m", version="2", outcome="error") == 5
        assert total(served.url, "ferry_gateway_requests_total", model="m", version="1", route="fallback") == 5


def test_a_corrupt_artifact_is_refused_and_the_old_version_keeps_serving(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    v1, v2 = store_version(store, 1), store_version(store, 2)
    Path(store.uri(v2.sha256)).write_bytes(classifier_bytes(8, 3, seed=99))  # same size class, other digest
    wrong_signature = store_version(store, 3, features=5)
    with served_gateway(tmp_path, [Deployment("m", 1, champion=v1)], store=store) as served, served.client() as c:
        assert served.apply(Deployment("m", 2, champion=v2)) == "refused"
        assert (
            served.apply(
                Deployment(
                    "m",
                    3,
                    champion=wrong_signature.__class__(
                        3, wrong_signature.sha256, wrong_signature.size_bytes, v1.signature
                    ),
                )
            )
            == "refused"
        )
        assert post(c).json()["model_version"] == "1"
        assert c.get("/status").json()["models"]["m"]["champion"]["version"] == 1
        # A deployment that brings a good canary beside the refused champion still gets its canary.
        v4 = store_version(store, 4)
        assert served.apply(Deployment("m", 4, champion=v2, challenger=v4, canary_weight=1.0)) == "refused"
        assert post(c, key="any").json()["model_version"] == "4"
        assert post(c, path="/versions/1").json()["model_version"] == "1"
        assert post(c, path="/versions/2").status_code == 404
        assert total(served.url, "ferry_gateway_deployments_total", model="m", outcome="refused") == 3


def test_hot_swap_under_concurrent_load_fails_no_request(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    versions = [store_version(store, number) for number in (1, 2, 3)]
    with served_gateway(tmp_path, [Deployment("m", 1, champion=versions[0])], store=store) as served:
        stop = threading.Event()
        seen: Counter[str] = Counter()
        failures: list[str] = []

        def load() -> None:
            with served.client() as client:
                while not stop.is_set():
                    response = post(client)
                    if response.status_code == 200:
                        seen[response.json()["model_version"]] += 1
                    else:
                        failures.append(f"{response.status_code} {response.text}")

        workers = [threading.Thread(target=load) for _ in range(6)]
        for worker in workers:
            worker.start()
        try:
            for revision, version in enumerate(versions[1:] + versions[:1], start=2):
                assert served.apply(Deployment("m", revision, champion=version)) == "applied"
                before = seen[str(version.version)]
                for _ in range(3000):  # until requests are answered by the version swapped in
                    if seen[str(version.version)] > before + 20 or failures:
                        break
                    threading.Event().wait(0.01)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert failures == []
        assert set(seen) == {"1", "2", "3"} and sum(seen.values()) > 50
        assert served.gateway.fleet.released >= 1  # v2 went out of use (v3's fallback is v2; then v1 rolls back)
        assert json.loads(httpx.get(served.url + "/status").text)["models"]["m"]["champion"]["version"] == 1
