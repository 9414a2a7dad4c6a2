"""``ferry train``: publish a TrainingRequested and, with ``--wait``, follow it to a registered version."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from pydantic import ValidationError

from shared.events import (
    Compression,
    Event,
    Hyperparameters,
    ModelRegistered,
    TrainingRequested,
    TrainingStatus,
)
from shared.settings import FerrySettings


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` command to the ``ferry`` parser's subparsers."""
    parser = subparsers.add_parser("train", help="request a training run (and follow it with --wait)")
    parser.add_argument("--model", required=True, help="model name, e.g. digits")
    parser.add_argument("--dataset", required=True, help="sklearn:digits, sklearn:wine, csv:PATH, ...")
    parser.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--epochs", type=int, default=Hyperparameters().epochs)
    parser.add_argument("--batch-size", type=int, default=Hyperparameters().batch_size)
    parser.add_argument("--learning-rate", type=float, default=Hyperparameters().learning_rate)
    parser.add_argument("--hidden-sizes", default="256,128", help="comma-separated hidden layer widths")
    parser.add_argument("--patience", type=int, default=Hyperparameters().patience)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-column", default=None, help="label column of a csv dataset (default: label)")
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--prune", type=float, default=None, help="fraction of weights to zero, e.g. 0.5")
    parser.add_argument("--distill-from", default=None, help="teacher model name (its champion is used)")
    parser.add_argument("--world-size", type=int, default=1, help="DistributedDataParallel processes")
    parser.add_argument("--wait", action="store_true", help="follow progress until the version is registered")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits at most")
    return parser


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace, FerrySettings], int]]:
    """The trainer's contribution to the ``ferry`` command (entry point ``ferry.commands``)."""
    add_train_parser(subparsers)
    return {"train": run_train}


def build_request(args: argparse.Namespace) -> TrainingRequested:
    """The event for the command line's arguments; raises ValueError with a readable message."""
    try:
        hidden = [int(size) for size in args.hidden_sizes.split(",") if size.strip()]
    except ValueError:
        raise ValueError(f"--hidden-sizes must be comma-separated integers, got {args.hidden_sizes!r}") from None
    try:
        return TrainingRequested(
            model_name=args.model,
            dataset=args.dataset,
            arch=args.arch,
            hyperparameters=Hyperparameters(
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                hidden_sizes=hidden,
                patience=args.patience,
                seed=args.seed,
            ),
            compression=Compression(quantize=args.quantize, prune=args.prune, distill_from=args.distill_from),
            label_column=args.label_column,
            world_size=args.world_size,
            requested_by="ferry-cli",
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise ValueError(problems) from None


def run_train(args: argparse.Namespace, settings: FerrySettings | None = None) -> int:
    """Publish the request; with --wait follow it and return 0 only once a version is registered."""
    settings = settings or FerrySettings()
    try:
        request = build_request(args)
    except ValueError as error:
        print(f"invalid training request: {error}", file=sys.stderr)
        return 2
    from shared.kafka import KafkaPublisher  # here: keeps `ferry --help` fast

    consumer = _follow_consumer(settings) if args.wait else None  # subscribed before publishing
    publisher = KafkaPublisher(settings, source="ferry/cli")
    try:
        publisher.publish(request)
    finally:
        publisher.close()
    print(f"requested training of {request.model_name!r} on {request.dataset} (request {request.request_id})")
    if consumer is None:
        return 0
    try:
        return follow(_events(consumer, deadline=time.monotonic() + args.timeout), request)
    finally:
        consumer.close()


def _follow_consumer(settings: FerrySettings) -> Any:
    from shared.kafka import make_consumer
    from shared.waiting import wait_for_assignment

    consumer = make_consumer(
        settings,
        f"ferry-cli-{uuid.uuid4().hex[:12]}",
        [TrainingStatus.topic, ModelRegistered.topic],
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


def follow(events: Iterable[Event], request: TrainingRequested, *, out: TextIO | None = None) -> int:
    """Show the request's progress; 0 when its version is registered, 1 on failure or timeout."""
    from tqdm import tqdm

    out = out or sys.stdout
    bar = tqdm(total=request.hyperparameters.epochs, unit="epoch", file=out, leave=True)
    try:
        for event in events:
            if isinstance(event, TrainingStatus) and event.request_id == request.request_id:
                outcome = _on_status(event, bar, out)
                if outcome is not None:
                    return outcome
            elif isinstance(event, ModelRegistered) and event.training_request_id == request.request_id:
                bar.close()
                accuracy = event.metrics.get("val_accuracy")
                shown = f", val_accuracy {accuracy:.4f}" if accuracy is not None else ""
                print(f"registered {event.model_name} version {event.version}{shown}", file=out)
                return 0
    finally:
        bar.close()
    print("gave up waiting: no registered version arrived in time", file=out)
    return 1


def _on_status(status: TrainingStatus, bar: Any, out: TextIO) -> int | None:
    if status.state == "progress" and status.epoch is not None:
        bar.total = status.epochs or bar.total
        bar.update(status.epoch - bar.n)
        if status.val_loss is not None and status.val_accuracy is not None:
            bar.set_postfix(val_loss=f"{status.val_loss:.4f}", val_acc=f"{status.val_accuracy:.3f}", refresh=False)
    elif status.state == "completed":
        bar.close()
        print(f"trained: artifact {status.artifact_sha256}; waiting for the registry", file=out)
    elif status.state == "failed":
        bar.close()
        print(f"training failed: {status.reason}", file=out)
        return 1
    return None
