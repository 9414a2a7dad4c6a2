"""``python -m services.registry``: the registry process, as ``bootstrap.process`` wires it."""

from __future__ import annotations

import sys

from services.registry.bootstrap import process
from services.registry.settings import InvalidApiTokens, RegistrySettings
from shared.runtime import run
from shared.service_args import parse_service_args


def main() -> int:
    """Run the registry until SIGTERM; returns the exit status (2: unusable settings, 1: a worker died)."""
    parse_service_args("registry", __doc__, RegistrySettings, sys.argv[1:])
    settings = RegistrySettings()
    return run("registry", lambda: process(settings), log_level=settings.ferry.log_level, refuse=(InvalidApiTokens,))


if __name__ == "__main__":
    sys.exit(main())
