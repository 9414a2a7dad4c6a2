"""The access log: one JSON line per request (its id, model, version, route, status, time taken, and its
protocol: ``http``, or ``grpc`` with the HTTP status its answer would have had).

Lines have the shape of the other JSON logs (time, level, service, logger, message) plus the request's
fields. They are formatted in the request path (a few microseconds, where ``logging`` with the JSON
formatter costs some 70) and written in one batch every ``flush_interval_s`` by the event loop, and at
shutdown: a crash loses at most that interval of lines. The gateway writes them to a file of their own
(:class:`RotatingFile`), so the service's log keeps what a person reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TextIO

import orjson

LOGGER = "services.gateway.access"


class Stream(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class RotatingFile:
    """Appends to ``path``; past ``max_bytes`` it becomes ``path.1`` (``.1`` to ``.2``, ... up to ``backups``).

    Several gateway processes may share the file: writes are appends, and a process that finds the path
    renamed by another reopens it rather than writing on into the rotated file.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._open()

    def _open(self) -> TextIO:
        return self.path.open("a", encoding="utf-8")

    def write(self, text: str, /) -> int:
        if not self._still_ours():
            self._file.close()
            self._file = self._open()
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def _still_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def _rotate(self) -> None:
        self._file.close()
        if self.backups:
            for number in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = self._open()

    def close(self) -> None:
        self._file.close()


def _json(fields: Mapping[str, object]) -> str:
    """orjson: a tenth of json.dumps' time, the same JSON (UTF-8 rather than \\u escapes); json.dumps only for
    what orjson refuses (a string with a lone surrogate)."""
    try:
        return orjson.dumps(fields).decode()
    except orjson.JSONEncodeError:
        return json.dumps(fields)


class AccessLog:
    def __init__(
        self, stream: Stream | None = None, *, service: str = "gateway", flush_interval_s: float = 0.05
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
        protocol: str = "http",
    ) -> None:
        now = int(time.time())
        if now != self._second:
            self._second, self._time = now, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        message = (
            f"infer id={request_id} model={model} version={version} route={route} status={status} "
            f"outcome={outcome} ms={milliseconds:.3f} protocol={protocol}"
        )
        fields = {
            "message": message,
            "request_id": request_id,
            "model": model,
            "version": version,
            "route": route,
            "status": status,
            "protocol": protocol,
        }
        self._lines.append(f'{{"time": "{self._time}", {self._prefix}{_json(fields)[1:]}\n')

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
