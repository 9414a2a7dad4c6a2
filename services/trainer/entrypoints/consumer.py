"""The trainer process: consume training.requested until SIGTERM/SIGINT, serving /metrics meanwhile.

Run with ``python -m services.trainer.entrypoints.consumer``. Scale out by starting more: the
consumer group splits the partitions (and so the requests) between them.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from prometheus_client import start_http_server

from services.trainer.bootstrap import bootstrap
from services.trainer.settings import TrainerSettings
from shared.telemetry import setup_telemetry
from shared.topics import ensure_topics

log = logging.getLogger(__name__)


def main() -> int:
    """Start telemetry, wire the trainer, run its consumer loop; returns the exit status."""
    settings = TrainerSettings()
    telemetry = setup_telemetry("trainer", log_level=settings.ferry.log_level)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    ensure_topics(settings.ferry)
    service = bootstrap(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        # The run in progress finishes (or is cut at the next poll); its offset is committed after.
        log.info("signal %s: stopping after the current request", signum)
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("trainer consuming %s", settings.ferry.topic("training.requested"))
    try:
        service.loop.run()
    except Exception:  # noqa: BLE001 - the loop logged why; exit non-zero so that a supervisor restarts us
        return 1
    finally:
        service.close()
        telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
