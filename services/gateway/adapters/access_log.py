"""The access log: one JSON line per request (its id, model, version, route, status, time taken).

Lines have the shape of the other JSON logs (time, level, service, logger, message) plus the request's
fields. They are formatted in the request path (a few microseconds, where ``logging`` with the JSON
formatter costs some 70) and written in one batch every ``flush_interval_s`` by the event loop, and at
shutdown: a crash loses at most that interval of lines.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

LOGGER = "services.gateway.access"


class AccessLog:
    def __init__(
        self, stream: TextIO | None = None, *, service: str = "gateway", flush_interval_s: float = 0.05
    ) -> None:
        self._stream = stream
        self._prefix = f'"level": "INFO", "service": "{service}", "logger": "{LOGGER}", '
        self._lines: list[str] = []
        self._interval = flush_interval_s
        self._second = -1
        self._time = ""
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        request_id: str,
        model: str,
        version: int | None,
        route: str | None,
        status: int,
        outcome: str,
        milliseconds: float,
    ) -> None:
        now = int(time.time())
        if now != self._second:
            self._second, self._time = now, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        message = (
            f"infer id={request_id} model={model} version={version} route={route} status={status} "
            f"outcome={outcome} ms={milliseconds:.3f}"
        )
        fields = {
            "message": message,
            "request_id": request_id,
            "model": model,
            "version": version,
            "route": route,
            "status": status,
        }
        self._lines.append(f'{{"time": "{self._time}", {self._prefix}{json.dumps(fields)[1:]}\n')

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        stream = self._stream or sys.stderr
        stream.write("".join(lines))
        stream.flush()

    def start(self) -> None:
        """Flush periodically from the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.flush()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.flush()
