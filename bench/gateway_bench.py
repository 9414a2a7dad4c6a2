"""Gateway benchmark: one ONNX model at 1, 16 and 64 concurrent connections, throughput and p50/p99, for
(a) ONNX Runtime in-process (the compute floor), (b) a minimal ASGI app calling ONNX Runtime (the HTTP
floor), (c) the Ferry gateway with metrics, access log, rate limits and canary routing on (1 and 2
workers, and 1 worker with batching off), and (d) each configuration of TorchServe (1 and 2 workers,
batch 1 and batch 8 within 5 ms) and Seldon MLServer (its worker pool, in process, in process with
adaptive batching; access log off), each peer installed into its own venv under .ferry/bench/ on first
use. Every server gets the same request (the OIP v2 JSON of one 64-feature row), listens on 127.0.0.1,
must first answer it with the right probabilities, and shares the machine's cores with the load
generator: wrk (C, one thread) where installed and the Python one (see gateway_load.py), each figure
labelled with its generator. A rate is printed only when every request counted was a 200 carrying the
output tensor. Beside each HTTP rate, the CPU time the server's processes used per answered request (user and
system, all its workers; not the load generator's): the machine's other work takes cores from a server and
so moves its rate, far less its CPU per request. Each peer's best configuration is picked per generator and
connection count, and the gateway (1 and 2 workers) is given as ratios to the best of them, all measured in
the same run.

gRPC (OIP v2's ModelInfer, one raw FP32 row, as tritonclient.grpc sends it) is measured beside HTTP, with
its own generator (``grpc``: gateway_grpc_load.py, asyncio grpcio, since ghz is not available here): the
gateway (1 and 2 workers) and MLServer's gRPC server (its gRPC peer; TorchServe's gRPC API is not OIP v2)
in its in-process configurations. A gRPC rate is printed only when every call counted was OK and carried
the output tensor, after the server's first gRPC answer matched the reference probabilities. ``--only
gRPC`` measures the gRPC rows alone.

    .venv/bin/python bench/gateway_bench.py [--seconds 5] [--connections 1,16,64] [--rounds 1]
        [--generators wrk,python,grpc] [--skip-peers] [--only NAME-PART] [--log-sample 0.01,1.0]

``--profile`` measures nothing else: it samples one gateway worker with py-spy while wrk (or the Python
generator) drives it at the last ``--connections`` level, and prints the top ``--top`` functions by own and
by total time (gateway_profile.py); ``--profile minimal`` samples the HTTP floor (b) the same way.

    .venv/bin/python bench/gateway_bench.py --profile [gateway|minimal] [--seconds 10] [--connections 64]

``--log-sample`` measures only inference logging's cost instead: see gateway_logging.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_grpc_load import first_answer, grpc_load  # noqa: E402
from gateway_load import GENERATORS, drive, summary  # noqa: E402
from gateway_profile import print_profile, profile_server  # noqa: E402
from gateway_servers import BENCH_HOME, mlserver, torchserve  # noqa: E402

from services.gateway.sample_models import classifier_bytes, reference_probabilities  # noqa: E402
from shared.local.ports import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
Figures = dict[tuple[str, int], Any]  # (generator, connections) → summary, or why there is none


def request_row() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 64)).round(4).astype(np.float32)


def request_body(row: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(row.shape), "datatype": "FP32", "data": row.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def in_process(model: Path, connections: int, seconds: float) -> dict[str, float]:
    """(a) session.run of one row from ``connections`` threads (ORT releases the GIL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    row = {"input": request_row()}
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


class Server:
    """A server process, its URL, and its log under .ferry/bench/logs."""

    def __init__(
        self, name: str, command: list[str], url: str, env: dict[str, str] | None = None, grpc_target: str = ""
    ) -> None:
        self.name, self.url, self.grpc_target = name, url, grpc_target
        log_dir = BENCH_HOME / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{''.join(c if c.isalnum() else '_' for c in name)}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or os.environ.copy(),
                cwd=str(BENCH_HOME),
                start_new_session=True,
            )

    def wait_ready(self, body: bytes, expected: np.ndarray, timeout_s: float = 180) -> None:
        """Until the server answers ``body`` with 200; then its answer must be ``expected``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                answer = httpx.post(self.url, content=body, headers={"content-type": "application/json"}, timeout=5)
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if answer.status_code == 200:
                data = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
                if data.shape != (expected.size,) or not np.allclose(data, expected.ravel(), atol=1e-5):
                    raise RuntimeError(f"{self.name} answers {answer.text[:120]}, not {expected.ravel()[:3]}...")
                self._check_grpc(expected)
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not answering after {timeout_s}s; see {self.log}")

    def _check_grpc(self, expected: np.ndarray) -> None:
        if not self.grpc_target:
            return
        data = first_answer(self.grpc_target, "bench", request_row())
        if data.shape != (expected.size,) or not np.allclose(data, expected.ravel(), atol=1e-5):
            raise RuntimeError(f"{self.name} answers {data[:3]} over gRPC, not {expected.ravel()[:3]}...")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s; returns when none of it is left
        (TorchServe's Java outlives its launcher, and a second TorchServe refuses to start beside it)."""
        deadline, signal_number = time.monotonic() + 30, int(signal.SIGTERM)
        while True:
            self.process.poll()  # reap the launcher, or the group never looks empty
            try:
                os.killpg(self.process.pid, signal_number)
            except ProcessLookupError:
                return
            if time.monotonic() > deadline:
                signal_number = int(signal.SIGKILL)
            elif signal_number == signal.SIGTERM:
                signal_number = 0  # sent once; from now on only ask whether the group is still there
            time.sleep(0.2)


@dataclass(frozen=True)
class Config:
    """One row of the table: a server in one configuration, of a group (floor, ferry, or a peer's name)."""

    group: str
    name: str
    start: Callable[[], Server]
    protocol: str = "http"


def local_server(name: str, kind: str, workers: int, model: Path, **env: str) -> Server:
    port = free_port()
    command = [sys.executable, str(HERE / "gateway_servers.py"), kind, str(port), str(workers), str(model)]
    return Server(name, command, f"http://127.0.0.1:{port}/v2/models/bench/infer", {**os.environ, **env})


def grpc_gateway(workers: int, model: Path) -> Server:
    """The gateway serving gRPC too (its workers share the gRPC port only when they know they are several)."""
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, str(HERE / "gateway_servers.py"), "gateway", str(port), str(workers), str(model)]
    env = {**os.environ, "FERRY_GATEWAY_GRPC_PORT": str(grpc_port), "FERRY_GATEWAY_WORKERS": str(workers)}
    url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
    return Server(f"gateway x{workers} grpc", command, url, env, f"127.0.0.1:{grpc_port}")


def peer_server(
    name: str, launch: Callable[[int], tuple[list[str], dict[str, str], str]], grpc_port: int | None = None
) -> Server:
    port = free_port()
    command, env, path = launch(port)
    grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else ""
    return Server(name, command, f"http://127.0.0.1:{port}{path}", env, grpc_target)


def grpc_plan(model: Path, peers: bool) -> list[Config]:
    """The gRPC rows: the gateway, and MLServer's gRPC server in its in-process configurations."""
    configs = [
        Config("ferry", f"(c) ferry gateway x{workers}, gRPC", partial(grpc_gateway, workers, model), "grpc")
        for workers in (1, 2)
    ]
    if not peers:
        return configs
    for label, batch, wait_s in (("in process", 0, 0.0), ("in process, adaptive batch 8 / 5 ms", 8, 0.005)):
        name, grpc_port = f"(d) mlserver {label}, gRPC", free_port()
        launch = partial(
            mlserver, model, parallel_workers=0, max_batch_size=batch, max_batch_time_s=wait_s, grpc_port=grpc_port
        )
        configs.append(Config("mlserver", name, partial(peer_server, name, launch, grpc_port), "grpc"))
    return configs


def plan(model: Path, cores: int, peers: bool) -> list[Config]:
    """Every configuration measured, floors and Ferry first, then each peer's."""
    no_batching = {"FERRY_GATEWAY_BATCHING": '{"max_batch_size": 1}'}
    configs = [
        Config("floor", "(b) minimal ASGI + ORT", lambda: local_server("minimal", "minimal", 1, model)),
        Config("ferry", "(c) ferry gateway x1", lambda: local_server("gateway x1", "gateway", 1, model)),
        Config("ferry", "(c) ferry gateway x2", lambda: local_server("gateway x2", "gateway", 2, model)),
        Config(
            "ferry",
            "(c) gateway x1, batching off",
            lambda: local_server("gateway nobatch", "gateway", 1, model, **no_batching),
        ),
    ]
    if not peers:
        return configs + grpc_plan(model, peers)
    mlservers = [(f"pool of {cores} workers", cores, 0, 0.0), ("in process", 0, 0, 0.0)]
    mlservers.append(("in process, adaptive batch 8 / 5 ms", 0, 8, 0.005))
    for label, pool, batch, wait_s in mlservers:
        name = f"(d) mlserver {label}"
        launch = lambda port, pool=pool, batch=batch, wait_s=wait_s: mlserver(  # noqa: E731
            model, port, parallel_workers=pool, max_batch_size=batch, max_batch_time_s=wait_s
        )
        configs.append(Config("mlserver", name, lambda name=name, launch=launch: peer_server(name, launch)))
    for workers in (1, 2):
        for batch, delay_ms in ((1, 0), (8, 5)):
            name = f"(d) torchserve x{workers}, batch {batch}" + (f" / {delay_ms} ms" if batch > 1 else "")
            launch = lambda port, w=workers, b=batch, d=delay_ms: torchserve(  # noqa: E731
                model, port, cores, workers=w, batch_size=b, max_batch_delay_ms=d
            )
            configs.append(Config("torchserve", name, lambda name=name, launch=launch: peer_server(name, launch)))
    return configs + grpc_plan(model, peers)


def measure(
    server: Server,
    body: bytes,
    expected: np.ndarray,
    body_file: Path,
    generators: list[str],
    levels: list[int],
    seconds: float,
) -> Figures:
    try:
        server.wait_ready(body, expected)
        figures: Figures = {}
        for generator in generators:
            if server.grpc_target:
                row_file = body_file.with_name("row.f32")
                row_file.write_bytes(request_row().astype("<f4").tobytes())
                grpc_load(server.grpc_target, "bench", row_file, expected.size, 8, 1.0)  # warm-up
                for level in levels:
                    figures[generator, level] = grpc_load(
                        server.grpc_target, "bench", row_file, expected.size, level, seconds
                    )
                continue
            drive(generator, server.url, body_file, 8, 1.0)  # warm-up
            for level in levels:
                figures[generator, level] = drive(generator, server.url, body_file, level, seconds, server.process.pid)
        return figures
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
        return {(generator, level): f"failed: {error}"[:160] for generator in generators for level in levels}
    finally:
        server.stop()


def _cell(figure: Any) -> str:
    if not isinstance(figure, dict):
        return str(figure)
    cpu = f", {figure['cpu_us']:.0f}" if "cpu_us" in figure else ""
    return f"{figure['rps']:,.0f}, {figure['p50']:.2f}, {figure['p99']:.2f}{cpu}"


def print_tables(rows: dict[str, Figures], generators: list[str], levels: list[int]) -> None:
    for generator in generators:
        print(f"\nload generator: {generator} ((a) is session.run from threads, no HTTP, no generator)\n")
        print("| server | " + " | ".join(f"{c} conn: req/s, p50, p99 (ms), CPU µs/req" for c in levels) + " |")
        print("| --- | " + " | ".join("---" for _ in levels) + " |")
        for name, figures in rows.items():
            if not any(key[0] in (generator, "none") for key in figures):
                continue  # an HTTP row in the gRPC table, or the reverse
            cells = [_cell(figures.get((generator, level), figures.get(("none", level)))) for level in levels]
            print(f"| {name} | " + " | ".join(cells) + " |")


def best_of(rows: dict[str, Figures], names: list[str], key: tuple[str, int]) -> tuple[str, dict[str, float]] | None:
    """The configuration among ``names`` with the highest throughput at ``key``, if any has a rate."""
    rated = [(name, rows[name][key]) for name in names if isinstance(rows[name].get(key), dict)]
    return max(rated, key=lambda pair: pair[1]["rps"]) if rated else None


def print_ratios(rows: dict[str, Figures], configs: list[Config], generators: list[str], levels: list[int]) -> None:
    """Each peer's best configuration, and the gateway against the best of them, per generator and level."""
    peers: dict[str, list[str]] = {}
    for config in configs:
        if config.group not in ("floor", "ferry") and config.name in rows:
            peers.setdefault(config.group, []).append(config.name)
    if not peers:
        return
    names = [f"(c) ferry gateway x{workers}{protocol}" for protocol in ("", ", gRPC") for workers in (1, 2)]
    gateways = [name for name in names if name in rows]
    print("\nratios: gateway / best peer (throughput: higher is better; p50, p99: lower is better)\n")
    columns = [f"best {peer}" for peer in peers] + gateways
    print("| generator, conn | " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---" for _ in columns) + " |")
    for generator in generators:
        for level in levels:
            key = (generator, level)
            best = {peer: best_of(rows, names, key) for peer, names in peers.items()}
            cells = [f"{pick[0][4:]}: {_cell(pick[1])}" if pick else "no rate" for pick in best.values()]
            rated = [pick for pick in best.values() if pick]
            top = max(rated, key=lambda pick: pick[1]["rps"])[1] if rated else None
            for gateway in gateways:
                mine = rows[gateway].get(key)
                if key not in rows[gateway]:
                    cells.append("-")  # another protocol's row
                    continue
                if top is None or not isinstance(mine, dict):
                    cells.append("no ratio (no rate)")
                    continue
                cpu = f", {mine['cpu_us'] / top['cpu_us']:.2f}x CPU/req" if "cpu_us" in mine and "cpu_us" in top else ""
                cells.append(
                    f"{mine['rps'] / top['rps']:.2f}x req/s, {mine['p50'] / top['p50']:.2f}x p50, "
                    f"{mine['p99'] / top['p99']:.2f}x p99{cpu}"
                )
            print(f"| {generator}, {level} | " + " | ".join(cells) + " |")


def run_config(
    config: Config,
    body: bytes,
    expected: np.ndarray,
    body_file: Path,
    generators: list[str],
    levels: list[int],
    args: argparse.Namespace,
) -> Figures:
    """Start one configuration, measure it, print its figures as they come (a run cut short keeps them)."""
    try:
        server = config.start()
    except (subprocess.SubprocessError, OSError, RuntimeError) as error:
        generators = ["grpc"] if config.protocol == "grpc" else [name for name in generators if name != "grpc"]
        return {(g, c): f"not started: {error}"[:120] for g in generators for c in levels}
    generators = ["grpc"] if config.protocol == "grpc" else [name for name in generators if name != "grpc"]
    figures = measure(server, body, expected, body_file, generators, levels, args.seconds)
    for generator in generators:
        print(f"  {generator}: " + "; ".join(_cell(figures[generator, level]) for level in levels), flush=True)
    return figures


def median_of(rounds: list[Figures]) -> Figures:
    """Per point, the median of each figure over the rounds; no rate unless every round had one."""
    combined: Figures = {}
    for key in rounds[0]:
        figures = [figures[key] for figures in rounds]
        refused = [figure for figure in figures if not isinstance(figure, dict)]
        combined[key] = (
            refused[0]
            if refused
            else {name: statistics.median(figure[name] for figure in figures) for name in figures[0]}
        )
    return combined


def run_profile(model: Path, body: bytes, expected: np.ndarray, body_file: Path, args: argparse.Namespace) -> int:
    """``--profile``: one server (the gateway, one worker, or the floor) sampled under load; its top entries."""
    generator = "wrk" if "wrk" in GENERATORS and "wrk" in args.generators else "python"
    connections = int(args.connections.split(",")[-1])
    server = local_server(f"{args.profile} profiled", args.profile, 1, model)
    try:
        server.wait_ready(body, expected)
        drive(generator, server.url, body_file, 8, 1.0)  # warm-up
        load = partial(drive, generator, server.url, body_file, connections, args.seconds)
        found, measured = profile_server(server, load, args.seconds, args.rate, BENCH_HOME / "profile.txt")
    finally:
        server.stop()
    print(
        f"{args.profile}, 1 worker, {generator} at {connections} connections for {args.seconds:g} s, py-spy at "
        f"{args.rate} Hz; under the profiler: {_cell(measured)} (req/s, p50, p99 ms); "
        f"load average {os.getloadavg()[0]:.1f}; raw samples in {BENCH_HOME / 'profile.txt'}"
    )
    print_profile(found, args.top, f"{args.profile}: where the time goes")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,16,64")
    every = ",".join((*GENERATORS, "grpc"))
    parser.add_argument("--generators", default=every, help=f"of {every}")
    parser.add_argument("--rounds", type=int, default=1, help="measure every server this many times; medians")
    parser.add_argument("--skip-peers", action="store_true", help="measure (a), (b), (c) only")
    parser.add_argument("--only", default="", help="measure only the servers whose name contains this")
    parser.add_argument("--profile", nargs="?", const="gateway", choices=("gateway", "minimal"), default=None)
    parser.add_argument("--rate", type=int, default=100, help="--profile: py-spy's samples a second")
    parser.add_argument("--top", type=int, default=25, help="--profile: entries per table")
    parser.add_argument(
        "--log-sample", default="", help="e.g. 0.01,1.0: inference logging's cost against sample 0 (gateway_logging.py)"
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.connections.split(",")]
    generators = [name for name in args.generators.split(",") if name in (*GENERATORS, "grpc")]
    if not generators:
        parser.error(f"no generator of {args.generators!r} is available here (available: {GENERATORS})")
    cores = len(os.sched_getaffinity(0))
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    model = BENCH_HOME / "model.onnx"
    model.write_bytes(classifier_bytes(64, 10, seed=0, hidden=256))
    row = request_row()
    expected = reference_probabilities(model.read_bytes(), row)
    body = request_body(row)
    body_file = BENCH_HOME / "request.json"
    body_file.write_bytes(body)
    if args.profile:
        return run_profile(model, body, expected, body_file, args)
    load_average = os.getloadavg()
    rows: dict[str, Figures] = {}
    if args.only in "(a) onnxruntime in-process":
        rows["(a) onnxruntime in-process"] = {("none", c): in_process(model, c, args.seconds) for c in levels}
    configs = [config for config in plan(model, cores, not args.skip_peers) if args.only in config.name]
    if args.log_sample:  # only the logging rows: see gateway_logging.py
        return logging_bench(args, model, body, expected, body_file, generators, levels)
    if "grpc" not in generators:
        configs = [config for config in configs if config.protocol != "grpc"]
    per_round: dict[str, list[Figures]] = {config.name: [] for config in configs}
    for round_index in range(args.rounds):  # every other round backwards: a drifting load evens out
        for config in configs if round_index % 2 == 0 else configs[::-1]:
            print(f"round {round_index + 1}/{args.rounds}: measuring {config.name} ...", flush=True)
            per_round[config.name].append(run_config(config, body, expected, body_file, generators, levels, args))
    rows.update({name: median_of(figures) for name, figures in per_round.items()})
    print(
        f"\n{cores} cores shared by every server and the load generator; load average before the run "
        f"{load_average[0]:.1f}, after {os.getloadavg()[0]:.1f}; {args.seconds:g} s per point, the median of "
        f"{args.rounds} round(s), every other one in reverse order; "
        "model: 64-256-10 MLP, one row per request"
    )
    print_tables(rows, generators, levels)
    print_ratios(rows, configs, generators, levels)
    return 0


def logging_bench(
    args: argparse.Namespace,
    model: Path,
    body: bytes,
    expected: np.ndarray,
    body_file: Path,
    generators: list[str],
    levels: list[int],
) -> int:
    """The gateway at log sample 0 and at each share of ``--log-sample``, logging to a broker started here."""
    from gateway_logging import logging_configs, print_costs, start_broker

    samples = [float(share) for share in args.log_sample.split(",")]
    generators = [name for name in generators if name != "grpc"]
    run = start_broker(BENCH_HOME / "kafka-home")
    try:
        configs = logging_configs(run, samples, partial(_named_server, model=model), Config)
        per_round: dict[str, list[Figures]] = {config.name: [] for config in configs}
        for round_index in range(args.rounds):
            for config in configs if round_index % 2 == 0 else configs[::-1]:
                print(f"round {round_index + 1}/{args.rounds}: measuring {config.name} ...", flush=True)
                per_round[config.name].append(run_config(config, body, expected, body_file, generators, levels, args))
        rows = {name: median_of(figures) for name, figures in per_round.items()}
        print_costs(run, rows, samples, [(g, c) for g in generators for c in levels])
    finally:
        run.stop()
    return 0


def _named_server(name: str, kind: str, workers: int, *, model: Path, **env: str) -> Server:
    return local_server(name, kind, workers, model, **env)


if __name__ == "__main__":
    sys.exit(main())
