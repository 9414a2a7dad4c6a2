"""``python -m services.monitor``: scrape, evaluate and alert; serve the API; follow deployments.

``bootstrap.process`` wires it; the process runtime (shared/runtime.py) runs it until SIGTERM. Exits 2
when the rules file cannot be used, 1 when a worker died.
"""

from __future__ import annotations

import sys

from services.monitor.adapters.rules_file import RulesFileError
from services.monitor.bootstrap import process
from services.monitor.settings import MonitorSettings
from shared.credentials import InvalidTokens
from shared.runtime import run
from shared.service_args import parse_service_args


def main() -> int:
    parse_service_args("monitor", __doc__, MonitorSettings, sys.argv[1:])
    settings = MonitorSettings()
    return run(
        "monitor", lambda: process(settings), log_level=settings.ferry.log_level, refuse=(RulesFileError, InvalidTokens)
    )


if __name__ == "__main__":
    sys.exit(main())
