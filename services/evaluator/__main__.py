"""``python -m services.evaluator``: the evaluator process, as ``bootstrap.process`` wires it, run by the
process runtime (shared/runtime.py) until SIGTERM; it exits 1 when a worker dies."""

from __future__ import annotations

import sys

from services.evaluator.bootstrap import process
from services.evaluator.settings import EvaluatorSettings
from shared.runtime import run
from shared.service_args import parse_service_args


def main() -> int:
    """Run the evaluator until SIGTERM; returns the exit status."""
    parse_service_args("evaluator", __doc__, EvaluatorSettings, sys.argv[1:])
    settings = EvaluatorSettings()
    return run("evaluator", lambda: process(settings), log_level=settings.ferry.log_level)


if __name__ == "__main__":
    sys.exit(main())
