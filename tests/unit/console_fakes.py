"""Fake sources for the console's unit tests: an in-memory registry, monitor, evaluator, gateways and
dead-letter store, each able to be 'down' (raising SourceDown as the real adapters do)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.console.adapters.runs import LiveRuns
from services.console.adapters.services import GatewayView
from services.console.domain import NotFound, SourceDown
from services.console.entrypoints.api import ConsoleDeps
from services.console.service import Console
from shared.dead_letters import DeadLetter, Operator
from shared.events import ArtifactRef, Signature, TensorSpec
from shared.registry_errors import RegistryUnauthorized
from shared.registry_models import (
    DeploymentAction,
    DeploymentChangeOut,
    DeploymentOut,
    EvaluationOut,
    HistoryEntryOut,
    ModelOut,
    VersionOut,
)
from shared.settings import FerrySettings

NOW = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>'
SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
)


def version(number: int, status: str = "registered", **extra: Any) -> VersionOut:
    values: dict[str, Any] = {
        "model_name": "iris",
        "version": number,
        "status": status,
        "artifact": ArtifactRef(
            uri=f"file:///a/{number}", sha256=f"{number:064x}", size_bytes=2048 * number, format="onnx"
        ),
        "signature": SIGNATURE,
        "metrics": {"val_accuracy": 0.9 + number / 100, "val_loss": 0.3 - number / 100},  # as the trainer names them
        "dataset": "sklearn:iris",
        "split_id": "split-1",
        "arch": "mlp",
        "hyperparameters": {},
        "compression": {},
        "timings": {},
        "training_request_id": f"req-{number}",
        "parent_model": None,
        "parent_version": None,
        "source_event_id": None,
        "tags": {},
        "created_at": NOW,
        "updated_at": NOW,
    }
    return VersionOut(**(values | extra))


def history_entry(
    revision: int, action: str, frm: int | None, to: int | None, reason: str, **extra: Any
) -> HistoryEntryOut:
    values: dict[str, Any] = {
        "revision": revision,
        "action": action,
        "from_champion": frm,
        "to_champion": to,
        "from_challenger": None,
        "to_challenger": None,
        "from_canary_weight": 0.0,
        "to_canary_weight": 0.0,
        "shadow": False,
        "actor": "evaluator",
        "reason": reason,
        "source_event_id": None,
        "created_at": NOW,
        "forced": False,
    }
    return HistoryEntryOut(**(values | extra))


def report(candidate: int = 3, champion: int = 2) -> dict[str, Any]:
    """A report shaped as services/evaluator/domain/report.py writes it."""

    def section(number: int, accuracy: float) -> dict[str, Any]:
        return {
            "version": number,
            "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.01},
            "intervals": {
                "accuracy": {"estimate": accuracy, "low": accuracy - 0.03, "high": accuracy + 0.02},
                "f1_macro": {"estimate": accuracy - 0.01, "low": accuracy - 0.05, "high": accuracy + 0.01},
            },
            "confusion_matrix": [[10, 1, 0], [0, 9, 2], [1, 0, 12]],
            "latency_ms": {"latency_b1_p50_ms": 0.1},
        }

    return {
        "schema": "ferry.evaluation.v1",
        "model_name": "iris",
        "dataset": "sklearn:iris",
        "split": {"split_id": "split-1", "rows": 35},
        "classes": ["setosa", "versicolor", "virginica"],
        "candidate": section(candidate, 0.94),
        "champion": section(champion, 0.91),
        "comparison": {
            "accuracy": {
                "metric": "accuracy",
                "difference": {"estimate": 0.03, "low": -0.01, "high": 0.07},
                "confidence": 0.95,
                "mcnemar": {"candidate_only": 4, "champion_only": 1, "p_value": 0.375},
                "summary": "better by noise",
            }
        },
        "decision": {
            "decision": "promote",
            "reason": "non-inferior",
            "checks": [{"name": "accuracy_floor", "passed": True, "detail": f"0.94 clears 0.80 {HOSTILE}"}],
        },
        "slices": [
            {
                "name": "virginica",
                "kind": "class",
                "metric": "recall",
                "rows": 12,
                "judged": False,
                "worse": False,
                "note": "12 rows, fewer than the 20 a judgement needs: reported only",
                "candidate": {"estimate": 0.5, "low": 0.25, "high": 0.75},
                "champion": {"estimate": 0.9167, "low": 0.75, "high": 1.0},
                "difference": {"estimate": -0.4167, "low": -0.6667, "high": -0.1667},
                "margin": 0.1,
                "lower_is_better": False,
            },
            {
                "name": "petal-long",
                "kind": "range",
                "metric": "accuracy",
                "rows": 30,
                "judged": True,
                "worse": True,
                "note": "",
                "candidate": {"estimate": 0.6, "low": 0.43, "high": 0.77},
                "champion": {"estimate": 0.97, "low": 0.9, "high": 1.0},
                "difference": {"estimate": -0.37, "low": -0.53, "high": -0.2},
                "margin": 0.1,
                "lower_is_better": False,
            },
            {
                "name": "wide",
                "kind": "range",
                "metric": "accuracy",
                "rows": 0,
                "judged": False,
                "worse": False,
                "note": f"not applicable {HOSTILE}",
            },
        ],
        "policy": {"confidence": 0.95},
    }


def evaluation(candidate: int, baseline: int | None, reason: str = "v3 is non-inferior to v2") -> EvaluationOut:
    return EvaluationOut(
        candidate_version=candidate,
        baseline_version=baseline,
        metrics={},
        baseline_metrics={},
        decision="promote",
        stage="canary",
        canary_weight=0.1,
        reason=reason,
        actor="evaluator",
        source_event_id=None,
        created_at=NOW,
        report=report(candidate, baseline or 0),
    )


@dataclass
class FakeRegistry:
    """The registry's reads over lists; ``change`` checks ``token`` as the registry would."""

    token: str = "a-real-operator-token-xyz"
    down: bool = False
    versions_: list[VersionOut] = field(
        default_factory=lambda: [
            version(
                3, "challenger", parent_model="iris-big", parent_version=2, compression={"distill_from": "iris-big"}
            ),
            version(2, "champion"),
            version(1, "archived"),
        ]
    )
    deployment_: DeploymentOut = field(
        default_factory=lambda: DeploymentOut(
            model_name="iris", champion=2, challenger=3, canary_weight=0.2, shadow=False, revision=4, updated_at=NOW
        )
    )
    history_: list[HistoryEntryOut] = field(
        default_factory=lambda: [
            history_entry(4, "promote", 2, 2, f"canary of v3 {HOSTILE}", to_challenger=3, to_canary_weight=0.2),
            history_entry(3, "promote", 1, 2, "v2 beats v1 on accuracy"),
            history_entry(2, "promote", None, 1, "first version"),
        ]
    )
    changes: list[tuple[str, DeploymentAction, str | None]] = field(default_factory=list)

    def _up(self) -> None:
        if self.down:
            raise SourceDown("registry", "http://127.0.0.1:8081: ConnectError")

    def _known(self, name: str) -> None:
        self._up()
        if name != "iris":
            raise NotFound(f"model {name!r} not found")

    def models(self) -> list[ModelOut]:
        self._up()
        return [
            ModelOut(
                name="iris",
                description=HOSTILE,
                tags={},
                latest_version=3,
                champion=2,
                challenger=3,
                created_at=NOW,
                updated_at=NOW,
            )
        ]

    def model(self, name: str) -> ModelOut:
        self._known(name)
        return self.models()[0]

    def versions(self, name: str) -> list[VersionOut]:
        self._known(name)
        return list(self.versions_)

    def version(self, name: str, number: int) -> VersionOut:
        self._known(name)
        for found in self.versions_:
            if found.version == number:
                return found
        raise NotFound(f"{name} has no version {number}")

    def evaluations(self, name: str, number: int, *, limit: int = 20) -> list[EvaluationOut]:
        self.version(name, number)
        return [evaluation(number, number - 1)] if number > 1 else []

    def deployment(self, name: str) -> DeploymentOut:
        self._known(name)
        return self.deployment_

    def history(self, name: str, *, limit: int = 100) -> list[HistoryEntryOut]:
        self._known(name)
        return list(self.history_)[:limit]

    def change(self, name: str, action: DeploymentAction, token: str | None) -> DeploymentChangeOut:
        self._known(name)
        if token is None:
            raise RegistryUnauthorized(401, "a bearer token is required")
        if token != self.token:
            raise RegistryUnauthorized(403, "invalid token")
        self.changes.append((name, action, token))
        self.deployment_ = self.deployment_.model_copy(update={"challenger": None, "canary_weight": 0.0, "revision": 5})
        return DeploymentChangeOut(**self.deployment_.model_dump(), changed=True)


@dataclass
class FakeMonitor:
    down: bool = False
    active: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        if self.down:
            raise SourceDown("monitor", "http://127.0.0.1:8082/api/v1/alerts: ConnectError")
        return {"active": self.active, "recent": []}

    def rules(self) -> list[dict[str, Any]]:
        if self.down:
            raise SourceDown("monitor", "http://127.0.0.1:8082/api/v1/alerts: ConnectError")
        return [
            {"name": "latency_p99", "promql": "histogram_quantile(0.99, ...) > 0.25", "action": "rollback", "active": 1}
        ]


@dataclass
class FakeEvaluator:
    down: bool = False

    def bakes(self) -> list[dict[str, Any]]:
        if self.down:
            raise SourceDown("evaluator", "http://127.0.0.1:8084/api/v1/bakes: ConnectError")
        return [{"model_name": "iris", "version": 3, "due_at": NOW.isoformat(), "due_in_s": 60.0}]


@dataclass
class FakeGateways:
    down: bool = False

    def views(self, model: str) -> tuple[list[GatewayView], list[str]]:
        if self.down:
            return [], ["gateway unreachable: http://127.0.0.1:8080/status: ConnectError"]
        served = {
            "revision": 4,
            "champion": {"version": 2},
            "challenger": {"version": 3},
            "canary_weight": 0.2,
            "shadow": False,
        }
        return [GatewayView("http://127.0.0.1:8080", served, {3: (45, 50)})], []


def dead_letter(offset: int = 7, *, reason: str = HOSTILE, value: bytes = b'{"request_id": "r1"}') -> DeadLetter:
    headers = [
        ("ce_id", b"event-1"),
        ("ce_source", b"ferry/test"),
        ("ce_type", b"ferry.training.status.v1"),
        ("ferry_dlq_reason", reason.encode()),
        ("ferry_dlq_error_type", b"PermanentError"),
        ("ferry_dlq_group", b"registry"),
        ("ferry_dlq_topic", b"ferry.training.status"),
        ("ferry_dlq_partition", b"0"),
        ("ferry_dlq_offset", b"3"),
    ]
    return DeadLetter("ferry.training.status.dlq", 0, offset, int(NOW.timestamp() * 1000), b"r1", value, headers)


@dataclass
class FakeDeadLetters:
    settings: FerrySettings
    letters: dict[str, list[DeadLetter]] = field(default_factory=dict)
    replayed: list[tuple[str, list[DeadLetter], Operator]] = field(default_factory=list)
    down: bool = False
    reads: int = 0

    def topics(self) -> list[str]:
        return [self.settings.topic("training.status"), self.settings.topic("model.trained")]

    def read(self, topic: str) -> list[DeadLetter]:
        self.reads += 1
        if self.down:
            raise SourceDown("Kafka", f"reading {topic}.dlq: NoBrokersAvailable")
        return list(self.letters.get(topic, []))

    def replay(self, topic: str, letters: Sequence[DeadLetter], operator: Operator) -> list[DeadLetter]:
        self.replayed.append((topic, list(letters), operator))
        return list(letters)


def fresh_table(model: str, versions: Sequence[int]) -> dict[str, Any]:
    """What ``ferry compare --json`` prints (services/evaluator/cli.py, comparison_table)."""
    return {
        "model": model,
        "split_id": "split-1",
        "test_rows": 360,
        "confidence": 0.95,
        "alpha": 0.05,
        "versions": [
            {
                "version": number,
                "metrics": {"accuracy": 0.9 + number / 100, "f1_macro": 0.89 + number / 100},
                "latency_ms": {"latency_b1_p50_ms": 0.05 * number},
                "size_bytes": 1024 * number,
                "format": "onnx",
            }
            for number in versions
        ],
        "baseline": versions[0],
        "differences": [
            {
                "version": number,
                "accuracy": {
                    "estimate": 0.01,
                    "low": -0.004,
                    "high": 0.024,
                    "mcnemar_p": 0.21,
                    "discordant": [9, 4],
                    "significant": False,
                },
            }  # fmt: skip
            for number in versions[1:]
        ],
    }


@dataclass
class FakeFresh:
    down: bool = False
    asked: list[tuple[str, list[int]]] = field(default_factory=list)

    def compare(self, model: str, versions: Sequence[int]) -> dict[str, Any]:
        self.asked.append((model, list(versions)))
        if self.down:
            raise SourceDown("ferry compare", "exit 1: cannot compare: dataset sklearn:iris is unknown", state="failed")
        return fresh_table(model, versions)


@dataclass
class Fakes:
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    monitor: FakeMonitor = field(default_factory=FakeMonitor)
    evaluator: FakeEvaluator = field(default_factory=FakeEvaluator)
    gateways: FakeGateways = field(default_factory=FakeGateways)
    settings: FerrySettings = field(default_factory=FerrySettings)
    runs: LiveRuns = field(default_factory=LiveRuns)
    replay_tokens: dict[str, str] = field(default_factory=dict)
    fresh: FakeFresh = field(default_factory=FakeFresh)

    def __post_init__(self) -> None:
        self.dead_letters = FakeDeadLetters(self.settings)

    def deps(self) -> ConsoleDeps:
        console = Console(self.registry, self.monitor, self.evaluator, self.gateways, self.dead_letters, self.fresh)
        return ConsoleDeps(console, self.runs, self.settings, self.replay_tokens)
