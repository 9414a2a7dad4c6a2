"""``python -m services.console``: the web console; ``bootstrap.process`` wires it, the process runtime
(shared/runtime.py) runs it until SIGTERM. Exits 2 when the tokens file cannot be used."""

from __future__ import annotations

import sys

from services.console.bootstrap import process
from services.console.settings import ConsoleSettings
from shared.credentials import InvalidTokens
from shared.runtime import run


def main() -> int:
    settings = ConsoleSettings()
    return run("console", lambda: process(settings), log_level=settings.ferry.log_level, refuse=(InvalidTokens,))


if __name__ == "__main__":
    sys.exit(main())
