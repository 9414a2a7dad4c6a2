"""``python -m services.registry``: the registry process, as ``bootstrap.run`` wires it."""

from __future__ import annotations

import sys

from services.registry.bootstrap import run
from services.registry.settings import RegistrySettings


def main() -> int:
    """Run the registry until SIGTERM; returns the exit status."""
    return run(RegistrySettings())


if __name__ == "__main__":
    sys.exit(main())
