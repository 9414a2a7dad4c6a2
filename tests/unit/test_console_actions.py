"""The console's actions over fake sources: each confirmation names its consequence, a change is forwarded
with the operator's token as it came (and refused without it), and the replay API checks its own token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from console_fakes import NOW, Fakes, dead_letter
from fastapi.testclient import TestClient

from services.console.adapters.services import shadow_counts
from services.console.entrypoints.api import create_app
from services.console.handlers import HANDLERS, handle_training_event
from shared.envelope import EventMeta
from shared.events import TrainingRequested, TrainingStatus

TOKEN = "a-real-operator-token-xyz"
REPLAYER = "Zq8-replayer-token-7Kx2pL"


@pytest.fixture
def fakes() -> Fakes:
    return Fakes(replay_tokens={REPLAYER: "alice"})


@pytest.fixture
def client(fakes: Fakes) -> Iterator[TestClient]:
    with TestClient(create_app(fakes.deps())) as http:
        yield http


def preview(client: TestClient, body: dict[str, object]) -> str:
    answer = client.post("/api/models/iris/deployment/preview", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["consequence"])


def test_each_confirmation_names_the_consequence(client: TestClient) -> None:
    # deployed: champion v2 (v1 before it, archived), challenger v3 at 20%
    assert preview(client, {"action": "rollback", "version": 2, "reason": "r"}) == (
        "Roll back iris: version 2 stops serving; version 1 serves the champion's share of traffic."
    )
    assert preview(client, {"action": "rollback", "version": 3, "reason": "r"}) == (
        "Roll back iris: challenger version 3 stops serving its 20% of traffic; version 2 serves all traffic."
    )
    assert preview(client, {"action": "set_canary_weight", "canary_weight": 0.5, "reason": "r"}) == (
        "Set the canary weight of iris: challenger version 3 goes from 20% to 50% of traffic; "
        "version 2 serves the rest."
    )
    assert preview(client, {"action": "promote", "version": 3, "reason": "r"}) == (
        "Promote iris version 3 to champion: it serves all traffic; version 2 stops serving."
    )
    assert preview(client, {"action": "promote", "version": 1, "canary_weight": 0.05, "reason": "r"}) == (
        "Promote iris version 1 as a canary: it serves 5% of traffic, version 2 serves the rest; "
        "version 3 stops being the challenger."
    )
    forced = preview(client, {"action": "promote", "version": 1, "force": True, "reason": "r"})
    assert forced.startswith("Force (archived): Promote iris version 1 to champion") and "recorded" in forced


def test_a_rollback_with_no_earlier_champion_says_the_registry_will_refuse(fakes: Fakes, client: TestClient) -> None:
    fakes.registry.history_ = fakes.registry.history_[:1]  # v2 never followed another champion
    fakes.registry.history_[0] = fakes.registry.history_[0].model_copy(update={"from_champion": None})
    assert "the registry will refuse" in preview(client, {"action": "rollback", "version": 2, "reason": "r"})


def test_a_change_is_forwarded_with_the_operators_token(fakes: Fakes, client: TestClient) -> None:
    body = {"action": "rollback", "version": 3, "reason": "p99 too high"}
    answer = client.post("/api/models/iris/deployment", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json()["revision"] == 5
    [(name, action, token)] = fakes.registry.changes
    assert (name, action.action, action.reason, token) == ("iris", "rollback", "p99 too high", TOKEN)


def test_a_change_without_a_token_or_with_a_wrong_one_is_refused_with_the_registrys_message(
    fakes: Fakes, client: TestClient
) -> None:
    body = {"action": "rollback", "version": 3, "reason": "r"}
    answer = client.post("/api/models/iris/deployment", json=body)
    assert answer.status_code == 401 and answer.json() == {"error": "a bearer token is required"}
    answer = client.post("/api/models/iris/deployment", json=body, headers={"Authorization": "Bearer wrong"})
    assert answer.status_code == 403 and answer.json() == {"error": "invalid token"}
    assert fakes.registry.changes == []


def test_a_bad_action_is_a_4xx_with_a_message(client: TestClient) -> None:
    answer = client.post("/api/models/iris/deployment", json={"action": "explode", "reason": "r"})
    assert answer.status_code == 422 and "error" in answer.json()
    answer = client.post("/api/models/ghost/deployment/preview", json={"action": "rollback", "reason": "r"})
    assert answer.status_code == 404


def replay(client: TestClient, body: dict[str, object], token: str | None = REPLAYER) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.post("/api/v1/dead-letters/training.status/replay", json=body, headers=headers)
    return answer.status_code, answer.json()


def test_the_replay_api_refuses_without_a_token_and_with_a_wrong_one(fakes: Fakes, client: TestClient) -> None:
    fakes.dead_letters.letters[fakes.settings.topic("training.status")] = [dead_letter()]
    assert replay(client, {"id": "event-1"}, token=None) == (401, {"error": "a bearer token is required"})
    assert replay(client, {"id": "event-1"}, token="not-the-token-of-anyone") == (403, {"error": "invalid token"})
    assert fakes.dead_letters.replayed == []


def test_replays_are_refused_while_no_tokens_file_is_configured(fakes: Fakes) -> None:
    fakes.replay_tokens = {}
    with TestClient(create_app(fakes.deps())) as http:
        answer = http.post("/api/v1/dead-letters/training.status/replay", json={"id": "event-1"})
    assert answer.status_code == 403 and "FERRY_REGISTRY_TOKENS_FILE" in answer.json()["error"]


def test_a_replay_with_the_token_sends_the_chosen_letter_as_its_user(fakes: Fakes, client: TestClient) -> None:
    topic = fakes.settings.topic("training.status")
    fakes.dead_letters.letters[topic] = [dead_letter(offset=7)]
    status, body = replay(client, {"id": "0:7", "dry_run": True})
    assert status == 200 and body["dry_run"] is True and fakes.dead_letters.replayed == []
    status, body = replay(client, {"id": "0:7"})
    assert status == 200 and body["by"] == "alice"
    [(sent_to, letters, operator)] = fakes.dead_letters.replayed
    assert sent_to == topic and [letter.offset for letter in letters] == [7]
    assert (operator.user, operator.credential) == ("alice", "bearer")
    assert replay(client, {"id": "0:8"})[0] == 404
    assert replay(client, {"id": "0:7", "since": NOW.isoformat()})[0] == 422
    assert replay(client, {"id": "0:7", "topic": "elsewhere"})[0] == 422
    headers = {"Authorization": f"Bearer {REPLAYER}"}
    assert client.post("/api/v1/dead-letters/nope/replay", json={"id": "x"}, headers=headers).status_code == 404


def test_the_training_handlers_fold_events_into_the_board_and_the_stream_sends_it(
    fakes: Fakes, client: TestClient
) -> None:
    assert set(HANDLERS) == {TrainingRequested, TrainingStatus}
    meta = EventMeta(event_id="e1", source="tests", time=NOW, traceparent=None, type_name="t")
    handle_training_event(
        TrainingRequested(model_name="iris", request_id="r1", dataset="sklearn:iris"), meta, runs=fakes.runs
    )
    before = fakes.runs.revision
    status = TrainingStatus(model_name="iris", request_id="r1", state="progress", epoch=2, epochs=8)
    handle_training_event(status, meta, runs=fakes.runs)
    assert fakes.runs.wait(before, timeout_s=0) == before + 1
    answer = client.get("/api/runs/stream?once=true")
    assert answer.headers["content-type"].startswith("text/event-stream")
    data = next(line for line in answer.text.splitlines() if line.startswith("data: "))
    [run] = __import__("json").loads(data[len("data: ") :])["runs"]
    assert (run["request_id"], run["state"], run["progress"], run["dataset"]) == (
        "r1",
        "progress",
        0.25,
        "sklearn:iris",
    )


def test_shadow_agreement_is_read_from_the_gateways_counter() -> None:
    exposition = "\n".join(
        [
            "# TYPE ferry_gateway_shadow_comparisons_total counter",
            'ferry_gateway_shadow_comparisons_total{model="iris",version="3",agreed="true"} 45.0',
            'ferry_gateway_shadow_comparisons_total{model="iris",version="3",agreed="false"} 5.0',
            'ferry_gateway_shadow_comparisons_total{model="wine",version="3",agreed="true"} 7.0',
            "",
        ]
    )
    assert shadow_counts(exposition, "iris") == {3: (45, 50)}
    assert shadow_counts(exposition, "digits") == {}
