"""``ferry train``: publish a TrainingRequested and, with ``--wait``, follow it through the evaluator's decision.

``--wait`` ends at the decision about the new version: 0 when it became the champion or a canary, 1 when it
was rejected or training failed. ``--wait-rollout`` follows a canary to the end of its bake (0 promoted to
champion, 1 rolled back); ``--wait-registered`` stops once the version is registered (no evaluator running).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TextIO

from pydantic import ValidationError

from services.trainer.recipes_cli import add_arch_arguments, add_recipes_parser, parse_options, run_recipes
from shared.events import (
    Compression,
    Event,
    FeatureSlice,
    Hyperparameters,
    ModelDecided,
    ModelRegistered,
    TrainingRequested,
    TrainingStatus,
)
from shared.settings import FerrySettings

# A student learning from soft targets needs several times the steps of one learning from labels
# (on digits, 30 epochs left it 4 points short; early stopping ends it near 100-200): the default
# --epochs with --distill-from. An explicit --epochs always wins.
DISTILL_DEFAULT_EPOCHS = 300


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` command to the ``ferry`` parser's subparsers."""
    parser = subparsers.add_parser("train", help="request a training run (and follow it with --wait)")
    parser.add_argument("--model", required=True, help="model name, e.g. digits")
    parser.add_argument("--dataset", required=True, help="sklearn:digits, csv:PATH, parquet:PATH (streamed), ...")
    add_arch_arguments(parser)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epoch cap; early stopping may end sooner (default {Hyperparameters().epochs}, or "
        f"{DISTILL_DEFAULT_EPOCHS} with --distill-from: a student learning soft targets needs more steps)",
    )
    parser.add_argument("--batch-size", type=int, default=Hyperparameters().batch_size)
    parser.add_argument("--learning-rate", type=float, default=Hyperparameters().learning_rate)
    parser.add_argument("--hidden-sizes", default="256,128", help="comma-separated hidden layer widths")
    parser.add_argument("--patience", type=int, default=Hyperparameters().patience)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-column", default=None, help="label column of a csv dataset (default: label)")
    parser.add_argument(
        "--task",
        choices=["classification", "regression"],
        default=None,
        help="what the label is: a class or a number (default: the dataset's own; a csv file is classification); "
        "a regressor's loss is --option loss=mse (default) or loss=huber",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8", "int8-static", "int8-dynamic"],
        default=None,
        help="int8: static or dynamic, whichever the trainer measures faster; or that one",
    )
    parser.add_argument(
        "--prune",
        type=float,
        default=None,
        help="share of parameters to remove as whole hidden units and channels, e.g. 0.5 (then fine-tuned)",
    )
    parser.add_argument("--distill-from", default=None, help="teacher model name (its champion is used)")
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=Compression().max_accuracy_drop,
        help="fail when compression costs more validation accuracy than this (vs the teacher when distilling)",
    )
    parser.add_argument("--world-size", type=int, default=1, help="DistributedDataParallel processes")
    parser.add_argument(
        "--slice",
        action="append",
        default=[],
        metavar="NAME:FEATURE:MIN:MAX",
        help="a feature range the evaluator guards beside each class's recall: rows whose feature FEATURE is at "
        "least MIN and below MAX (either may be empty), e.g. petal-long:2:4.5: (repeatable)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the run through the evaluator's decision: exit 0 champion or canary, 1 rejected or failed",
    )
    parser.add_argument(
        "--wait-rollout", action="store_true", help="as --wait, and follow a canary to its bake's end (1 rolled back)"
    )
    parser.add_argument(
        "--wait-registered", action="store_true", help="follow only until the version is registered (no evaluator)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits at most")
    return parser


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace, FerrySettings], int]]:
    """The trainer's contribution to the ``ferry`` command (entry point ``ferry.commands``)."""
    add_train_parser(subparsers)
    add_recipes_parser(subparsers)
    return {"train": run_train, "recipes": run_recipes}


def build_request(args: argparse.Namespace) -> TrainingRequested:
    """The event for the command line's arguments; raises ValueError with a readable message."""
    try:
        hidden = [int(size) for size in args.hidden_sizes.split(",") if size.strip()]
    except ValueError:
        raise ValueError(f"--hidden-sizes must be comma-separated integers, got {args.hidden_sizes!r}") from None
    epochs = args.epochs
    options = parse_options(args.option)
    if epochs is None:
        epochs = DISTILL_DEFAULT_EPOCHS if args.distill_from else Hyperparameters().epochs
    try:
        return TrainingRequested(
            model_name=args.model,
            dataset=args.dataset,
            arch=args.arch,
            hyperparameters=Hyperparameters(
                epochs=epochs,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                hidden_sizes=hidden,
                patience=args.patience,
                seed=args.seed,
                options=options,
            ),
            compression=Compression(
                quantize=args.quantize,
                prune=args.prune,
                distill_from=args.distill_from,
                max_accuracy_drop=args.max_accuracy_drop,
            ),
            label_column=args.label_column,
            task=args.task,
            world_size=args.world_size,
            requested_by="ferry-cli",
            slices=[_slice(text) for text in args.slice],
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise ValueError(problems) from None


def _slice(text: str) -> FeatureSlice:
    """``NAME:FEATURE:MIN:MAX`` as a slice; ValueError when malformed, ValidationError when not a range."""
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"--slice takes NAME:FEATURE:MIN:MAX (MIN or MAX may be empty), got {text!r}")
    name, feature, low, high = parts
    try:
        fields = {"name": name, "feature": int(feature), "min": _bound(low), "max": _bound(high)}
    except ValueError:
        raise ValueError(f"--slice {text!r}: FEATURE must be an integer, MIN and MAX numbers") from None
    return FeatureSlice.model_validate(fields)


def _bound(text: str) -> float | None:
    return float(text) if text.strip() else None


def run_train(args: argparse.Namespace, settings: FerrySettings | None = None) -> int:
    """Publish the request; with --wait follow it and return 0 only once a version is registered."""
    settings = settings or FerrySettings()
    try:
        request = build_request(args)
    except ValueError as error:
        print(f"invalid training request: {error}", file=sys.stderr)
        return 2
    from shared.kafka import KafkaPublisher  # here: keeps `ferry --help` fast

    until = _until(args)
    consumer = _follow_consumer(settings) if until else None  # subscribed before publishing
    from kafka.errors import KafkaError

    try:
        publisher = KafkaPublisher(settings, source="ferry/cli")
        try:
            publisher.publish(request)
        finally:
            publisher.close()
    except KafkaError as error:  # the broker away, or refusing this user (WriteRefused says which)
        print(f"ferry train: the request was not sent: {error}", file=sys.stderr)
        if consumer is not None:
            consumer.close()
        return 1
    print(f"requested training of {request.model_name!r} on {request.dataset} (request {request.request_id})")
    if consumer is None:
        return 0
    try:
        return follow(_events(consumer, deadline=time.monotonic() + args.timeout), request, until=until or "decided")
    finally:
        consumer.close()


def _follow_consumer(settings: FerrySettings) -> Any:
    from shared.kafka import make_consumer
    from shared.waiting import wait_for_assignment

    consumer = make_consumer(
        settings,
        f"ferry-cli-{uuid.uuid4().hex[:12]}",
        [TrainingStatus.topic, ModelRegistered.topic, ModelDecided.topic],
        auto_offset_reset="latest",
    )
    wait_for_assignment(consumer, timeout_s=60)
    for partition in consumer.assignment():
        consumer.position(partition)  # resolve "latest" now, so nothing published after is missed
    return consumer


def _events(consumer: Any, *, deadline: float) -> Iterator[Event]:
    from shared.envelope import DecodeError, decode

    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                try:
                    yield decode(record.headers, record.key, record.value).event
                except DecodeError:
                    continue  # not ours to judge: the consumers of these topics dead-letter it


Until = Literal["registered", "decided", "rollout"]


def _until(args: argparse.Namespace) -> Until | None:
    if args.wait_rollout:
        return "rollout"
    if args.wait_registered:
        return "registered"
    return "decided" if args.wait else None


def follow(
    events: Iterable[Event], request: TrainingRequested, *, until: Until = "decided", out: TextIO | None = None
) -> int:
    """Show the request's progress to ``until``; 0 for a registered (champion, canary) version, else 1."""
    from tqdm import tqdm

    out = out or sys.stdout
    bar = tqdm(total=request.hyperparameters.epochs, unit="epoch", file=out, leave=True)
    version: int | None = None
    early: list[ModelDecided] = []  # topics interleave freely: a decision may be read before its registration
    try:
        for event in events:
            if isinstance(event, TrainingStatus) and event.request_id == request.request_id:
                outcome = _on_status(event, bar, out)
                if outcome is not None:
                    return outcome
            elif isinstance(event, ModelRegistered) and event.training_request_id == request.request_id:
                bar.close()
                version = event.version
                shown = "".join(
                    f", {name} {event.metrics[name]:.4f}"
                    for name in ("val_accuracy", "val_rmse", "val_r2")
                    if name in event.metrics
                )
                print(f"registered {event.model_name} version {event.version}{shown}", file=out)
                for line in _notes(event.metrics):
                    print(line, file=out)
                if until == "registered":
                    return 0
                print("waiting for the evaluator's decision", file=out)
                for decision in [seen for seen in early if _about(seen, request, event.version)]:
                    outcome = _on_decision(decision, until, out)
                    if outcome is not None:
                        return outcome
            elif isinstance(event, ModelDecided) and event.model_name == request.model_name:
                if version is None:
                    early.append(event)
                    continue
                outcome = _on_decision(event, until, out) if _about(event, request, version) else None
                if outcome is not None:
                    return outcome
    finally:
        bar.close()
    awaited = {"registered": "a registered version", "decided": "a decision", "rollout": "the bake's end"}[until]
    print(f"gave up waiting: {awaited} did not arrive in time (see `ferry history {request.model_name}`)", file=out)
    return 1


def _about(decision: ModelDecided, request: TrainingRequested, version: int) -> bool:
    return decision.model_name == request.model_name and decision.version == version


def _on_decision(decision: ModelDecided, until: Until, out: TextIO) -> int | None:
    """Say what the decision made of the version; the exit code once it is final for ``until``."""
    name, version = decision.model_name, decision.version
    if decision.decision == "reject":
        print(f"rejected {name} version {version}: {decision.reason}", file=out)
        return 1
    if decision.decision == "rollback":
        print(f"rolled back {name} version {version}: {decision.reason}", file=out)
        return 1
    if decision.stage == "canary" or (decision.stage is None and decision.canary_weight is not None):
        weight = f" at {decision.canary_weight:.0%}" if decision.canary_weight is not None else ""
        print(f"canary: {name} version {version}{weight}: {decision.reason}", file=out)
        if until == "rollout":
            print("waiting for the bake's end", file=out)
            return None
        return 0
    print(f"champion: {name} version {version}: {decision.reason}", file=out)
    return 0


def _signed(value: float) -> str:
    """``+0.0012``, never ``-0.0000``: a drop that rounds to nothing reads as none."""
    rounded = round(value, 4)
    return f"{rounded + 0.0:+.4f}" if rounded != 0 else "+0.0000"


def _notes(metrics: dict[str, float]) -> list[str]:
    """What the version's metrics say about compression and the epoch budget, in words."""
    notes = []
    if "parameter_ratio" in metrics:
        notes.append(
            f"compressed: {metrics['parameter_ratio']:.3g}x the parameters, {metrics['size_ratio']:.3g}x the bytes, "
            f"latency {metrics['latency_ratio_b1']:.3g}x at batch 1 and {metrics['latency_ratio_b64']:.3g}x at "
            f"batch 64, validation accuracy {_signed(-metrics['val_accuracy_drop'])}, against the uncompressed model"
        )
    faster = [size for size in (1, 64) if metrics.get(f"int8_faster_b{size}") == 1.0]
    if "int8_faster_b1" in metrics or "int8_faster_b64" in metrics:
        if faster:
            sizes = " and ".join(f"batch {size}" for size in faster)
            notes.append(f"int8 was faster than fp32 at {sizes} on the trainer's CPU")
        else:
            notes.append("int8 is smaller but not faster than fp32 at batch 1 or 64 on the trainer's CPU")
    elif metrics.get("int8_faster") == 0.0:
        notes.append("int8 is smaller but not faster than fp32 at both batch sizes on the trainer's CPU")
    if metrics.get("stopped_at_epoch_cap") == 1.0:
        notes.append("training was still improving at its last epoch: a larger --epochs may help")
    return notes


def _on_status(status: TrainingStatus, bar: Any, out: TextIO) -> int | None:
    if status.state == "progress" and status.epoch is not None:
        bar.total = status.epochs or bar.total
        bar.update(status.epoch - bar.n)
        if status.val_loss is not None and status.val_accuracy is not None:
            bar.set_postfix(val_loss=f"{status.val_loss:.4f}", val_acc=f"{status.val_accuracy:.3f}", refresh=False)
        elif status.val_loss is not None:  # a regressor: its loss on the standardized target
            bar.set_postfix(val_loss=f"{status.val_loss:.4f}", refresh=False)
    elif status.state == "completed":
        bar.close()
        print(f"trained: artifact {status.artifact_sha256}; waiting for the registry", file=out)
    elif status.state == "failed":
        bar.close()
        print(f"training failed: {status.reason}", file=out)
        return 1
    return None
