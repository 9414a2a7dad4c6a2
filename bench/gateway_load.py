"""The bench's load generator: N keep-alive HTTP/1.1 connections, each sending the next request when the
last answer has arrived (closed loop), for a fixed time. It counts answered requests by status and keeps
every latency. Run as its own process (its own interpreter and GIL) by gateway_bench.py:

    python bench/gateway_load.py URL BODY_FILE CONNECTIONS SECONDS OUT_FILE [HEADER:VALUE ...]

writes one JSON object to OUT_FILE: {"ok": n, "failed": n, "statuses": {...}, "seconds": s,
"latencies_ms": [...]} (a file, not stdout: a pipe left non-blocking by the event loop cuts long lines).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit


class Connection(asyncio.Protocol):
    """One client connection: writes a request, parses the answer's status and length, repeats."""

    def __init__(self, request: bytes, stop_at: float, results: dict[str, list], done: asyncio.Future[None]) -> None:
        self.request, self.stop_at, self.results, self.done = request, stop_at, results, done
        self.buffer = b""
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        if time.perf_counter() >= self.stop_at:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.started = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        status = head.split(" ", 2)[1]
        self.results["latencies"].append(time.perf_counter() - self.started)
        self.results["statuses"].append(status)
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run(url: str, body: bytes, connections: int, seconds: float, headers: list[str]) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{header}\r\n" for header in headers)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    results: dict[str, list] = {"latencies": [], "statuses": []}
    started = time.perf_counter()
    stop_at = started + seconds
    finished = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(partial(Connection, request, stop_at, results, done), host, port)
        finished.append(done)
    await asyncio.wait_for(asyncio.gather(*finished), seconds + 30)
    elapsed = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for status in results["statuses"]:
        statuses[status] = statuses.get(status, 0) + 1
    ok = statuses.get("200", 0)
    return {
        "ok": ok,
        "failed": len(results["statuses"]) - ok,
        "statuses": statuses,
        "seconds": elapsed,
        "latencies_ms": [round(value * 1000, 4) for value in results["latencies"]],
    }


def main() -> None:
    url, body_file, connections, seconds, out_file, *headers = sys.argv[1:]
    work = run(url, Path(body_file).read_bytes(), int(connections), float(seconds), headers)
    try:
        import uvloop

        result = uvloop.run(work)
    except ImportError:
        result = asyncio.run(work)
    Path(out_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
