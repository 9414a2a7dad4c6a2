"""Gateway benchmark: one ONNX model at 1, 16 and 64 concurrent connections, throughput and p50/p99, for
(a) ONNX Runtime in-process (the compute floor), (b) a minimal ASGI app calling ONNX Runtime (the HTTP
floor), (c) the Ferry gateway with metrics, access log, rate limits and canary routing on (1 and 2
workers, and 1 worker with batching off), and (d) TorchServe (batching on) and Seldon MLServer, each
installed into its own venv under .ferry/bench/ on first use. Every server gets the same request (the
OIP v2 JSON of one 64-feature row), listens on 127.0.0.1, and shares the machine's cores with the load
generator (a separate process, see gateway_load.py). A rate is printed only when every request was
answered 200; ratios are against the best peer measured in the same run.

    .venv/bin/python bench/gateway_bench.py [--seconds 5] [--connections 1,16,64] [--skip-peers]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_servers import BENCH_HOME, mlserver, torchserve  # noqa: E402

from services.gateway.sample_models import classifier_bytes  # noqa: E402

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request_body() -> bytes:
    row = np.random.default_rng(0).normal(size=64).round(4).tolist()
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}).encode()


def summary(count: int, seconds: float, latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {"rps": count / seconds, "p50": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))]}


def in_process(model: Path, connections: int, seconds: float) -> dict[str, float]:
    """(a) session.run of one row from ``connections`` threads (ORT releases the GIL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    row = {"input": np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)}
    latencies: list[list[float]] = [[] for _ in range(connections)]
    stop_at = time.perf_counter() + seconds

    def caller(mine: list[float]) -> None:
        while (started := time.perf_counter()) < stop_at:
            session.run(None, row)
            mine.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=caller, args=(mine,)) for mine in latencies]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = [value for mine in latencies for value in mine]
    return summary(len(merged), time.perf_counter() - started, merged)


def load(url: str, body_file: Path, connections: int, seconds: float) -> dict[str, float] | str:
    """Drive ``url`` from a separate process; the summary, or why no rate is printed."""
    out_file = body_file.with_name("load-result.json")
    command = [
        sys.executable,
        str(HERE / "gateway_load.py"),
        url,
        str(body_file),
        str(connections),
        str(seconds),
        str(out_file),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if result.returncode != 0:
        return f"load generator failed: {result.stderr.strip()[-200:]}"
    answer = json.loads(out_file.read_text())
    if answer["failed"] or answer["ok"] != len(answer["latencies_ms"]) or not answer["ok"]:
        return f"refused to rate: {answer['ok']} answered 200 of {len(answer['latencies_ms'])} ({answer['statuses']})"
    return summary(answer["ok"], answer["seconds"], answer["latencies_ms"])


class Server:
    """A server process, its URL, and its log under .ferry/bench/logs."""

    def __init__(self, name: str, command: list[str], url: str, env: dict[str, str] | None = None) -> None:
        self.name, self.url = name, url
        log_dir = BENCH_HOME / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name.replace(' ', '_')}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or os.environ.copy(),
                cwd=str(BENCH_HOME),
                start_new_session=True,
            )

    def wait_ready(self, body: bytes, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                answer = httpx.post(self.url, content=body, headers={"content-type": "application/json"}, timeout=5)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not answering after {timeout_s}s; see {self.log}")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, 15)
            self.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, 9)


def local_server(kind: str, workers: int, model: Path, **env: str) -> Server:
    port = free_port()
    command = [sys.executable, str(HERE / "gateway_servers.py"), kind, str(port), str(workers), str(model)]
    name = f"{kind} x{workers}" + ("".join(f" {k}={v}" for k, v in env.items()) if env else "")
    return Server(name, command, f"http://127.0.0.1:{port}/v2/models/bench/infer", {**os.environ, **env})


def peer_server(name: str, model: Path, cores: int) -> Server:
    port = free_port()
    command, env, path = (torchserve if name == "torchserve" else mlserver)(model, port, cores)
    return Server(name, command, f"http://127.0.0.1:{port}{path}", env)


def measure(server: Server, body: bytes, body_file: Path, levels: list[int], seconds: float) -> dict[int, Any]:
    try:
        server.wait_ready(body)
        load(server.url, body_file, 8, 1.0)  # warm-up
        return {level: load(server.url, body_file, level, seconds) for level in levels}
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as error:
        return {level: f"failed: {error}"[:160] for level in levels}
    finally:
        server.stop()


def print_table(rows: dict[str, dict[int, Any]], levels: list[int], machine: str) -> None:
    print(f"\n{machine}\n")
    print("| server | " + " | ".join(f"{c} conn: req/s, p50, p99 (ms)" for c in levels) + " |")
    print("| --- | " + " | ".join("---" for _ in levels) + " |")
    for name, results in rows.items():
        cells = [
            (f"{r['rps']:,.0f}, {r['p50']:.2f}, {r['p99']:.2f}" if isinstance(r, dict) else r)
            for r in (results[c] for c in levels)
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    peers = [results for name, results in rows.items() if name.startswith("(d)")]
    gateway = rows.get("(c) ferry gateway x1")
    if not gateway:
        return
    print()
    for level in levels:
        rated = [results[level] for results in peers if isinstance(results[level], dict)]
        mine = gateway[level]
        if not rated or not isinstance(mine, dict):
            print(f"{level} conn: no ratio (a peer or the gateway has no rate)")
            continue
        best = max(rated, key=lambda r: r["rps"])
        print(
            f"{level} conn: gateway/best peer throughput {mine['rps'] / best['rps']:.2f}x, "
            f"p99 {mine['p99']:.2f} ms vs {best['p99']:.2f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--skip-peers", action="store_true", help="measure (a), (b), (c) only")
    parser.add_argument("--only", default="", help="measure only the servers whose name contains this")
    args = parser.parse_args()
    levels = [int(level) for level in args.connections.split(",")]
    cores = len(os.sched_getaffinity(0))
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    model = BENCH_HOME / "model.onnx"
    model.write_bytes(classifier_bytes(64, 10, seed=0, hidden=256))
    body = request_body()
    body_file = BENCH_HOME / "request.json"
    body_file.write_bytes(body)
    load_average = os.getloadavg()
    rows: dict[str, dict[int, Any]] = {
        "(a) onnxruntime in-process": {c: in_process(model, c, args.seconds) for c in levels}
    }
    no_batching = {"FERRY_GATEWAY_BATCHING": '{"max_batch_size": 1}'}
    plan = [
        ("(b) minimal ASGI + ORT", lambda: local_server("minimal", 1, model)),
        ("(c) ferry gateway x1", lambda: local_server("gateway", 1, model)),
        ("(c) ferry gateway x2", lambda: local_server("gateway", 2, model)),
        ("(c) gateway x1, batching off", lambda: local_server("gateway", 1, model, **no_batching)),
    ]
    if not args.skip_peers:
        plan += [
            ("(d) torchserve (batch 8, 5 ms)", lambda: peer_server("torchserve", model, cores)),
            ("(d) mlserver", lambda: peer_server("mlserver", model, cores)),
        ]
    for name, start in plan:
        if args.only not in name:
            continue
        print(f"measuring {name} ...", flush=True)
        try:
            server = start()
        except (subprocess.SubprocessError, OSError, RuntimeError) as error:
            rows[name] = {level: f"not started: {error}"[:120] for level in levels}
            continue
        rows[name] = measure(server, body, body_file, levels, args.seconds)
    machine = (
        f"{cores} cores shared by every server and the load generator; load average before the run "
        f"{load_average[0]:.1f}; {args.seconds:.0f} s per point; model: 64-256-10 MLP, one row per request"
    )
    print_table(rows, levels, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
