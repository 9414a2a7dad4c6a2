"""``ferry runs [REQUEST_ID]``: the training runs, or one run followed to its end.

Without an id it lists every run the training topics hold, newest first (``--limit``, ``--failed``,
``--active``). With one it shows that run and, while it is still training, follows its progress until
it completes or fails: what ``ferry train --wait`` shows, for a request sent without ``--wait``.

Exit codes: 0 listed, or the run completed; 1 the run failed, or gave up waiting (``--timeout``);
3 no run has that id; 4 the broker did not answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from shared.ops_common import CommandError, Exit, Table, add_json_flag, emit, run_verb
from shared.settings import FerrySettings
from shared.training_runs import RunBoard, RunsUnavailable, TrainingRun

COLUMNS = ("request", "model", "dataset", "arch", "state", "epoch", "val_acc", "updated (UTC)", "reason")


def register(sub: Any) -> dict[str, Any]:
    """Add ``ferry runs`` to ``sub``; ``shared.cli`` calls it."""
    parser = sub.add_parser("runs", help="list training runs, or follow one (REQUEST_ID) to its end")
    parser.add_argument("request_id", nargs="?", help="a training request id: show it, and follow it while it runs")
    parser.add_argument("--limit", type=int, default=50, help="at most this many runs, newest first (default 50)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="only runs that failed")
    which.add_argument("--active", action="store_true", help="only runs still in progress")
    parser.add_argument("--no-follow", action="store_true", help="show the run as it is now; do not wait")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to follow a run (default 1800)")
    add_json_flag(parser)

    def command(args: argparse.Namespace, settings: FerrySettings) -> int:
        return run_verb(lambda: runs(args, settings))

    return {"runs": command}


def runs(args: argparse.Namespace, settings: FerrySettings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.limit < 1:
        raise CommandError(Exit.USAGE, "--limit must be at least 1")
    if args.request_id is None:
        return _list(_board(settings), args, out)
    return _one(args, settings, out)


def _board(settings: FerrySettings) -> RunBoard:
    from kafka.errors import KafkaError

    from shared.training_runs import read_runs

    try:
        return read_runs(settings, timeout_s=30)
    except (KafkaError, RunsUnavailable) as error:
        raise CommandError(
            Exit.UNREACHABLE, f"could not read the training topics ({error}); is Kafka up? `ferry status`"
        ) from None


def _list(board: RunBoard, args: argparse.Namespace, out: TextIO) -> int:
    chosen = board.failed() if args.failed else board.in_progress() if args.active else board.runs()
    chosen = chosen[: args.limit]
    title = f"{len(chosen)} training run(s)" + (
        " that failed" if args.failed else " in progress" if args.active else ""
    )
    emit(
        Table(title, COLUMNS, [_row(run) for run in chosen], [run.summary() for run in chosen]),
        as_json=args.json,
        out=out,
    )
    return int(Exit.OK)


def _row(run: TrainingRun) -> list[Any]:
    total = run.epochs or run.epochs_requested
    epoch = f"{run.epoch}/{total}" if run.epoch is not None and total else None
    accuracy = f"{run.val_accuracy:.4f}" if run.val_accuracy is not None else None
    return [
        run.request_id,
        run.model_name,
        run.dataset,
        run.architecture,
        run.state,
        epoch,
        accuracy,
        run.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        run.reason,
    ]


def _one(args: argparse.Namespace, settings: FerrySettings, out: TextIO) -> int:
    from kafka.errors import KafkaError

    from shared.training_runs import follow_runs

    deadline = time.monotonic() + args.timeout
    try:
        for board, changed in follow_runs(settings, timeout_s=30, stop=lambda: time.monotonic() > deadline):
            run = board.get(args.request_id)
            if run is None:
                raise CommandError(Exit.NOT_FOUND, f"no training run {args.request_id!r}; `ferry runs` lists them")
            if not any(seen is run for seen in changed):
                continue
            _say(run, args, out)
            if run.finished or args.no_follow:
                return int(Exit.FAILED) if run.state == "failed" else int(Exit.OK)
    except (KafkaError, RunsUnavailable) as error:
        raise CommandError(
            Exit.UNREACHABLE, f"could not read the training topics ({error}); is Kafka up? `ferry status`"
        ) from None
    print(f"gave up after {args.timeout:.0f}s: run {args.request_id} is still training", file=out)
    return int(Exit.FAILED)


def _say(run: TrainingRun, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        import json

        print(json.dumps(run.summary(), default=str), file=out, flush=True)
        return
    if run.state == "requested":
        print(f"{run.request_id}: {run.model_name} on {run.dataset}, requested, not started yet", file=out, flush=True)
    elif run.state == "failed":
        print(f"{run.request_id}: failed: {run.reason}", file=out, flush=True)
    elif run.state == "completed":
        print(f"{run.request_id}: completed: artifact {run.artifact_sha256}", file=out, flush=True)
    else:
        epoch, accuracy = _row(run)[5], _row(run)[6]
        shown = f" epoch {epoch}" if epoch else ""
        shown += f", val_accuracy {accuracy}" if accuracy else ""
        print(f"{run.request_id}: {run.model_name} training{shown}", file=out, flush=True)
