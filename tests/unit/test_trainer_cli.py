"""``ferry train``: arguments to a request, and following a request to its registered version."""

from __future__ import annotations

import argparse
import io

import pytest

from services.trainer.cli import _notes, add_train_parser, build_request, follow
from services.trainer.settings import TrainerSettings
from shared.events import (
    ArtifactRef,
    Event,
    ModelDecided,
    ModelRegistered,
    Signature,
    TrainingRequested,
    TrainingStatus,
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ferry")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def test_arguments_become_a_training_request() -> None:
    request = build_request(
        _parse(
            "--model",
            "digits",
            "--dataset",
            "sklearn:digits",
            "--arch",
            "cnn",
            "--epochs",
            "12",
            "--quantize",
            "int8-static",
            "--max-accuracy-drop",
            "0.02",
            "--prune",
            "0.3",
            "--distill-from",
            "big",
            "--world-size",
            "2",
            "--hidden-sizes",
            "64,32",
        )
    )
    assert (request.model_name, request.dataset, request.arch) == ("digits", "sklearn:digits", "cnn")
    assert request.world_size == 2
    assert request.hyperparameters.epochs == 12 and request.hyperparameters.hidden_sizes == [64, 32]
    compression = request.compression
    assert (compression.quantize, compression.prune, compression.distill_from) == ("int8-static", 0.3, "big")
    assert compression.max_accuracy_drop == 0.02


def test_distillation_gets_a_longer_epoch_cap_unless_one_is_given() -> None:
    plain = build_request(_parse("--model", "m", "--dataset", "sklearn:digits"))
    distilled = build_request(_parse("--model", "m", "--dataset", "sklearn:digits", "--distill-from", "big"))
    chosen = build_request(
        _parse("--model", "m", "--dataset", "sklearn:digits", "--distill-from", "big", "--epochs", "7")
    )
    assert (plain.hyperparameters.epochs, distilled.hyperparameters.epochs, chosen.hyperparameters.epochs) == (
        30,
        300,
        7,
    )


def test_slices_name_feature_ranges_for_the_evaluator() -> None:
    request = build_request(
        _parse("--model", "m", "--dataset", "sklearn:iris", "--slice", "petal-long:2:4.5:", "--slice", "narrow:0::5")
    )
    assert [item.model_dump() for item in request.slices] == [
        {"name": "petal-long", "feature": 2, "min": 4.5, "max": None},
        {"name": "narrow", "feature": 0, "min": None, "max": 5.0},
    ]
    assert build_request(_parse("--model", "m", "--dataset", "sklearn:iris")).slices == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--prune", "1.5"), "prune"),
        (("--max-accuracy-drop", "-0.1"), "max_accuracy_drop"),
        (("--epochs", "0"), "epochs"),
        (("--hidden-sizes", "64,wide"), "comma-separated integers"),
        (("--slice", "petal-long:2:4.5"), "NAME:FEATURE:MIN:MAX"),
        (("--slice", "petal-long:two:4.5:"), "FEATURE must be an integer"),
        (("--slice", "open:2::"), "needs a min, a max or both"),
    ],
)
def test_invalid_arguments_are_explained(argv: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        build_request(_parse("--model", "m", "--dataset", "sklearn:iris", *argv))


def _request() -> TrainingRequested:
    return TrainingRequested(model_name="m", dataset="sklearn:iris", request_id="r1")


def _status(state: str, request_id: str = "r1", **fields: object) -> TrainingStatus:
    return TrainingStatus(model_name="m", request_id=request_id, state=state, **fields)  # type: ignore[arg-type]


def _registered(request_id: str, version: int) -> ModelRegistered:
    artifact = ArtifactRef(uri="/a.onnx", sha256="b" * 64, size_bytes=1, format="onnx")
    return ModelRegistered(
        model_name="m",
        version=version,
        artifact=artifact,
        signature=Signature(inputs=[], outputs=[]),
        dataset="sklearn:iris",
        split_id="v1-x",
        metrics={"val_accuracy": 0.97},
        training_request_id=request_id,
    )


def test_follow_ends_at_the_registered_version_of_this_request() -> None:
    events: list[Event] = [
        _status("started"),
        _status("progress", epoch=1, epochs=30, val_loss=0.5, val_accuracy=0.8, train_loss=0.7),
        _status("failed", request_id="someone-else", reason="not ours"),
        _status("completed", artifact_sha256="b" * 64),
        _registered("someone-else", 2),
        _registered("r1", 3),
    ]
    out = io.StringIO()
    assert follow(events, _request(), until="registered", out=out) == 0
    assert "registered m version 3" in out.getvalue() and "not ours" not in out.getvalue()


def test_follow_says_what_compression_bought_and_whether_int8_is_faster() -> None:
    registered = _registered("r1", 4).model_copy(
        update={
            "metrics": {
                "val_accuracy": 0.97,
                "parameter_ratio": 0.06,
                "size_ratio": 0.026,
                "latency_ratio_b1": 1.2,
                "latency_ratio_b64": 0.5,
                "val_accuracy_drop": 0.007,
                "int8_faster": 0.0,
                "stopped_at_epoch_cap": 1.0,
            }
        }
    )
    out = io.StringIO()
    assert follow([registered], _request(), until="registered", out=out) == 0
    shown = out.getvalue()
    assert "0.06x the parameters, 0.026x the bytes, latency 1.2x at batch 1 and 0.5x at batch 64" in shown
    assert "validation accuracy -0.0070" in shown
    assert "int8 is smaller but not faster" in shown and "a larger --epochs may help" in shown


def test_the_compression_summary_never_shows_minus_zero_and_names_the_faster_batch_sizes() -> None:
    metrics = {"parameter_ratio": 0.25, "size_ratio": 0.3, "latency_ratio_b1": 0.8, "latency_ratio_b64": 1.1}
    unchanged = _notes({**metrics, "val_accuracy_drop": 0.0, "int8_faster_b1": 1.0, "int8_faster_b64": 0.0})
    assert "validation accuracy +0.0000" in unchanged[0] and "-0.0000" not in " ".join(unchanged)
    assert "int8 was faster than fp32 at batch 1 on" in unchanged[1]
    tiny = _notes({**metrics, "val_accuracy_drop": 0.00001, "int8_faster_b1": 1.0, "int8_faster_b64": 1.0})
    assert "-0.0000" not in tiny[0] and "at batch 1 and batch 64" in tiny[1]
    neither = _notes({**metrics, "val_accuracy_drop": -0.002, "int8_faster_b1": 0.0, "int8_faster_b64": 0.0})
    assert "validation accuracy +0.0020" in neither[0] and "not faster than fp32 at batch 1 or 64" in neither[1]


def _decided(version: int, decision: str, stage: str | None = None, weight: float | None = None) -> ModelDecided:
    return ModelDecided(
        model_name="m", version=version, decision=decision, stage=stage, canary_weight=weight, reason=f"{decision}!"
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("until", "decisions", "code", "said"),
    [
        ("decided", [_decided(3, "promote", "champion")], 0, "champion: m version 3: promote!"),
        ("decided", [_decided(3, "promote", "canary", 0.1)], 0, "canary: m version 3 at 10%: promote!"),
        ("decided", [_decided(3, "reject")], 1, "rejected m version 3: reject!"),
        ("rollout", [_decided(3, "promote", "canary", 0.1), _decided(3, "promote", "champion")], 0, "champion: m"),
        ("rollout", [_decided(3, "promote", "canary", 0.1), _decided(3, "rollback")], 1, "rolled back m version 3"),
        ("rollout", [_decided(3, "promote", "canary", 0.1)], 1, "gave up waiting: the bake's end"),
    ],
)
def test_follow_waits_for_the_decision_about_its_own_version(
    until: str, decisions: list[ModelDecided], code: int, said: str
) -> None:
    events: list[Event] = [_decided(2, "reject"), _registered("r1", 3), _decided(2, "promote"), *decisions]
    out = io.StringIO()
    assert follow(events, _request(), until=until, out=out) == code  # type: ignore[arg-type]
    assert said in out.getvalue() and "version 2" not in out.getvalue()


def test_a_decision_read_before_its_registration_still_counts() -> None:
    out = io.StringIO()
    assert follow([_decided(3, "reject"), _registered("r1", 3)], _request(), out=out) == 1
    assert "rejected m version 3" in out.getvalue()


def test_follow_reports_a_failure() -> None:
    out = io.StringIO()
    assert follow([_status("started"), _status("failed", reason="loss became NaN")], _request(), out=out) == 1
    assert "training failed: loss became NaN" in out.getvalue()


def test_follow_gives_up_when_nothing_is_registered() -> None:
    out = io.StringIO()
    assert follow([_status("completed")], _request(), out=out) == 1
    assert "gave up" in out.getvalue()
    out = io.StringIO()
    assert follow([_registered("r1", 3)], _request(), out=out) == 1  # registered, but nobody decided
    assert "gave up waiting: a decision did not arrive" in out.getvalue()


def test_settings_read_their_prefix_and_the_shared_registry_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_REGISTRY_URL", "http://registry:9000")
    monkeypatch.setenv("FERRY_TRAINER_BUDGET_S", "42")
    monkeypatch.setenv("FERRY_HOME", "/srv/ferry")
    settings = TrainerSettings()
    assert settings.registry_url == "http://registry:9000"
    assert settings.budget_s == 42
    assert str(settings.resolved_work_dir) == "/srv/ferry/trainer/work"
    assert settings.max_poll_interval_ms > 42_000
