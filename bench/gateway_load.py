"""The bench's load generators, both closed loops over N keep-alive HTTP/1.1 connections (each sends the
next request when the last answer has arrived) for a fixed time, both counting only answers that are 200
with a body that carries the output tensor:

- ``python``: this file run as its own process (its own interpreter and GIL) on asyncio/uvloop; it keeps
  every latency:

      python bench/gateway_load.py URL BODY_FILE CONNECTIONS SECONDS OUT_FILE [HEADER:VALUE ...]

  writes one JSON object to OUT_FILE: {"ok": n, "failed": n, "statuses": {...}, "seconds": s,
  "latencies_ms": [...]} (a file, not stdout: a pipe left non-blocking by the event loop cuts long lines);
- ``wrk``: Debian's C load generator (``/usr/bin/wrk``, one thread) with :data:`WRK_SCRIPT`, far lighter
  on the cores the servers share with it; its request count, error counts and our count of checked
  answers must agree before a rate is printed.

:func:`drive` runs either and answers the summary (req/s, p50, p99 in ms), or why no rate is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ANSWER_MARK = b'"probabilities"'  # the output tensor's name: an answer without it is not counted


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
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        status = head.split(" ", 2)[1]
        if status == "200" and ANSWER_MARK not in body:
            status = "200 without the output tensor"
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


# --- driving a server: either generator, answering a summary or why no rate is printed ---------------

WRK = shutil.which("wrk")
GENERATORS = ("wrk", "python") if WRK else ("python",)
WRK_MARK = "FERRY-WRK "
# wrk's Lua (LuaJIT): POST the body file given after "--"; per thread count the answers that are 200 and
# carry the output tensor, and the others; at the end one line of JSON with wrk's own counts beside ours.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
checked, unchecked = 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.body = file:read("*a")
  file:close()
end

function response(status, headers, body)
  if status == 200 and body:find('"probabilities"', 1, true) then
    checked = checked + 1
  else
    unchecked = unchecked + 1
  end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("checked")
    bad = bad + thread:get("unchecked")
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "ok": %d, "bad": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %.1f, "p99_us": %.1f}\\n',
    "MARK", summary.requests, ok, bad, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("MARK", WRK_MARK)


def summary(count: int, seconds: float, latencies_ms: list[float]) -> dict[str, float]:
    """req/s, p50 and p99 (ms) of ``count`` operations that took ``latencies_ms``, in ``seconds``."""
    ordered = sorted(latencies_ms)
    return {"rps": count / seconds, "p50": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))]}


def python_load(url: str, body_file: Path, connections: int, seconds: float) -> dict[str, float] | str:
    """This file as a separate process against ``url``."""
    out_file = body_file.with_name("load-result.json")
    command = [sys.executable, __file__, url, str(body_file), str(connections), str(seconds), str(out_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if result.returncode != 0:
        return f"python load generator failed: {result.stderr.strip()[-200:]}"
    answer = json.loads(out_file.read_text())
    if answer["failed"] or answer["ok"] != len(answer["latencies_ms"]) or not answer["ok"]:
        return f"refused to rate: {answer['ok']} checked 200s of {len(answer['latencies_ms'])} ({answer['statuses']})"
    return summary(answer["ok"], answer["seconds"], answer["latencies_ms"])


def checked_wrk(url: str, connections: int, seconds: float, script: Path, arguments: list[str]) -> dict[str, Any] | str:
    """wrk, one thread, running ``script`` (which prints WRK_MARK and its counts at the end) against ``url``: the
    counts when every request wrk counted was a checked 200, else why no rate may be printed."""
    command = [WRK or "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script)]
    result = subprocess.run([*command, url, "--", *arguments], capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in result.stdout.splitlines() if line.startswith(WRK_MARK)]
    if result.returncode != 0 or not lines:
        return f"wrk failed: {(result.stderr or result.stdout).strip()[-200:]}"
    counts: dict[str, Any] = json.loads(lines[-1][len(WRK_MARK) :])
    errors = {name: counts[name] for name in ("connect", "read", "write", "status", "timeout") if counts[name]}
    if errors or counts["bad"] or counts["ok"] != counts["requests"] or not counts["ok"]:
        return f"refused to rate: {counts['ok']} checked 200s of {counts['requests']} requests (errors {errors})"
    return counts


def wrk_load(url: str, body_file: Path, connections: int, seconds: float) -> dict[str, float] | str:
    """wrk, one thread, against ``url``; a rate only when every request wrk counted was a checked 200."""
    script = body_file.with_name("post.lua")
    script.write_text(WRK_SCRIPT)
    counts = checked_wrk(url, connections, seconds, script, [str(body_file)])
    if isinstance(counts, str):
        return counts
    return {
        "rps": counts["ok"] / (counts["duration_us"] / 1e6),
        "p50": counts["p50_us"] / 1000,
        "p99": counts["p99_us"] / 1000,
    }


def drive(
    generator: str, url: str, body_file: Path, connections: int, seconds: float, session: int | None = None
) -> dict[str, float] | str:
    """Load ``url`` with ``generator`` (one of :data:`GENERATORS`); with ``session`` (the server's session id), also
    ``cpu_us``: the CPU time its processes used per answered request, which other work on the machine changes
    far less than the rate (a shared machine's load takes cores from the server, not CPU from its requests)."""
    before = session_cpu_s(session) if session is not None else 0.0
    figures = (wrk_load if generator == "wrk" else python_load)(url, body_file, connections, seconds)
    if session is not None and isinstance(figures, dict):
        answered = figures["rps"] * seconds
        figures["cpu_us"] = (session_cpu_s(session) - before) / answered * 1e6
    return figures


def session_cpu_s(session: int) -> float:
    """User and system CPU seconds used so far by the live processes of a session (a server and its workers)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == session:  # after the name: state, ppid, pgrp, session, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


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
