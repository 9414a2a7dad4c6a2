"""``python -m services.registry.migrate``: bring the registry's schema to Alembic's head, then exit.

The Helm chart runs it as a pre-install/pre-upgrade hook Job, so that new registry pods start on a migrated
schema (they are told not to migrate). It takes the registry's advisory lock, as a registry's own start does.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.exc import OperationalError

from services.registry.adapters.schema import upgrade
from services.registry.bootstrap import make_engine, wait_for_database
from services.registry.settings import RegistrySettings


def main(argv: list[str] | None = None) -> int:
    """Migrate the database FERRY_DATABASE_URL names; 0 once it is at head."""
    parser = argparse.ArgumentParser(prog="python -m services.registry.migrate", description=__doc__)
    parser.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for the database to answer")
    args = parser.parse_args(argv)
    settings = RegistrySettings()
    logging.basicConfig(level=settings.ferry.log_level, format="%(levelname)s %(name)s %(message)s")
    engine = make_engine(settings)
    try:
        wait_for_database(engine, timeout_s=args.wait_s)
        changed = upgrade(engine)
    except OperationalError as error:
        # The driver's own words (host, port, refusal), never the URL: it may hold the password.
        print(f"the registry's database did not answer: {error.orig}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"registry schema migrated from {changed[0]} to {changed[1]}" if changed else "registry schema at head")
    return 0


if __name__ == "__main__":
    sys.exit(main())
