"""``python -m services.trainer``: the trainer process, as ``bootstrap.process`` wires it, run by the
process runtime (shared/runtime.py). SIGTERM lets the run in hand finish (for up to the shutdown timeout;
an unfinished run is redelivered), commits, and exits 0; a dead consumer loop exits 1."""

from __future__ import annotations

import sys

from services.trainer.bootstrap import process
from services.trainer.settings import TrainerSettings
from shared.runtime import run
from shared.service_args import parse_service_args


def main() -> int:
    parse_service_args("trainer", __doc__, TrainerSettings, sys.argv[1:])
    settings = TrainerSettings()
    return run("trainer", lambda: process(settings), log_level=settings.ferry.log_level)


if __name__ == "__main__":
    sys.exit(main())
