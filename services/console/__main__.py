"""``python -m services.console``: the web console; ``bootstrap.process`` wires it, the process runtime
(shared/runtime.py) runs it until SIGTERM. Exits 2 when the tokens file cannot be used."""

from __future__ import annotations

import sys

from services.console.bootstrap import process
from services.console.settings import ConsoleSettings
from shared.credentials import InvalidTokens
from shared.runtime import run
from shared.service_args import parse_service_args


def main() -> int:
    parse_service_args("console", __doc__, ConsoleSettings, sys.argv[1:])
    settings = ConsoleSettings()
    return run("console", lambda: process(settings), log_level=settings.ferry.log_level, refuse=(InvalidTokens,))


if __name__ == "__main__":
    sys.exit(main())
