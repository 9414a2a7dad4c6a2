"""A thousand models on one gateway (issue 17 §2): start-up to ready, resident memory, p50/p99 of a warm and
of a cold model, and throughput over a Zipf mix against a single-model gateway measured in the same run.

    .venv/bin/python bench/gateway_many_models.py [--models 1000] [--budget-models 200] [--seconds 10]

Each gateway is its own process (``serve`` below): the real app from ``bootstrap``, deployments from a
file in place of the registry and Kafka (as ``gateway_servers.py`` does), artifacts in a real store read
through its verified path, ``FERRY_GATEWAY_LAZY_START`` on and a memory budget that holds
``--budget-models`` sessions. Throughput is wrk's (one thread), every answer checked: a run whose counts
are off prints why instead of a rate. The figures are printed against the issue's aims.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_load import WRK_SCRIPT, checked_wrk  # noqa: E402

from services.gateway.budget import estimate_bytes  # noqa: E402
from shared.local.ports import free_port  # noqa: E402

FEATURES, CLASSES, HIDDEN = 32, 10, 32
Rate = tuple[float, float]
"""Checked answers a second, and the gateway's CPU microseconds per answer."""
AIMS = {"ready_s": 30.0, "cold_p99_ms": 200.0, "warm_ratio": 0.9}
# wrk's request(): each request the next path of a Zipf-drawn list (a file, one path a line).
ZIPF_SCRIPT = WRK_SCRIPT.replace(
    "function init(args)\n",
    "paths, next_path = {}, 0\nfunction request()\n  next_path = next_path % #paths + 1\n"
    '  return wrk.format("POST", paths[next_path], nil, wrk.body)\nend\n\nfunction init(args)\n'
    "  for line in io.lines(args[2]) do table.insert(paths, line) end\n",
)


def build(folder: Path, models: int) -> tuple[Path, int]:
    """``models`` small MLPs in a real store and their deployments in a file; the size of one artifact."""
    from services.gateway.sample_models import classifier_bytes, classifier_signature
    from shared.artifacts import ArtifactStore

    store = ArtifactStore(str(folder / "artifacts"))
    signature = classifier_signature(FEATURES, CLASSES).model_dump()
    deployments, size = [], 0
    for index in range(models):
        _, sha256, size = store.put_bytes(classifier_bytes(FEATURES, CLASSES, seed=index, hidden=HIDDEN))
        champion = {"version": 1, "sha256": sha256, "size_bytes": size, "signature": signature}
        deployments.append({"model_name": f"m{index:04d}", "revision": 1, "champion": champion})
    spec_file = folder / "deployments.json"
    spec_file.write_text(json.dumps({"store": store.root, "deployments": deployments}))
    return spec_file, size


def serve(port: int, spec_file: Path, budget_mb: float) -> None:
    """One gateway process over the deployments in ``spec_file`` (the bench starts it)."""
    import uvicorn

    from services.gateway.bootstrap import SERVER_OPTIONS, bootstrap
    from services.gateway.domain import Deployment, VersionSpec
    from services.gateway.entrypoints.api import create_app
    from services.gateway.settings import GatewaySettings
    from shared.artifacts import ArtifactStore
    from shared.events import Signature
    from shared.settings import FerrySettings

    spec = json.loads(spec_file.read_text())

    def version(raw: dict[str, Any]) -> VersionSpec:
        signature = Signature.model_validate(raw["signature"])
        return VersionSpec(raw["version"], raw["sha256"], raw["size_bytes"], signature)

    class FileSource:
        def deployments(self) -> list[Deployment]:
            return [Deployment(d["model_name"], 1, champion=version(d["champion"])) for d in spec["deployments"]]

    home = spec_file.parent / f"home-{port}"
    settings = GatewaySettings(
        ferry=FerrySettings(home=home, artifact_root=spec["store"]),
        port=port,
        device="cpu",
        lazy_start=True,
        memory_budget_mb=budget_mb,
        access_log=False,
        protect_window_s=5,
    )
    store = ArtifactStore(spec["store"])
    gateway = bootstrap(settings, source=FileSource(), store=store, follow_kafka=False)
    gc.freeze()  # as build_app does for the real process
    uvicorn.run(create_app(gateway), host="127.0.0.1", port=port, log_config=None, access_log=False, **SERVER_OPTIONS)


class Server:
    """A gateway process, the time it took to be ready, and its resident memory."""

    def __init__(self, spec_file: Path, budget_mb: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        command = [sys.executable, __file__, "serve", str(self.port), str(spec_file), str(budget_mb)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not self._ready():
            if self.process.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit("the gateway did not become ready")
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - started

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """CPU seconds the process has used, all its threads, user and system."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, Any]:
        report: dict[str, Any] = httpx.get(f"{self.url}/status", timeout=30).json()["memory"]
        return report

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def body() -> bytes:
    rows = np.random.default_rng(0).normal(size=(1, FEATURES)).round(4).tolist()
    tensor = {"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": rows[0]}
    return json.dumps({"inputs": [tensor]}).encode()


def latencies(client: httpx.Client, paths: list[str], payload: bytes) -> list[float] | str:
    """One request after another; the milliseconds of each, or why they are not counted."""
    taken = []
    for path in paths:
        started = time.perf_counter()
        answer = client.post(path, content=payload, headers={"content-type": "application/json"})
        taken.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200 or b'"probabilities"' not in answer.content:
            return f"refused to count: {path} answered {answer.status_code}"
    return taken


def percentiles(values: list[float] | str) -> str:
    if isinstance(values, str):
        return values
    ordered = sorted(values)
    return f"p50 {statistics.median(ordered):.2f} ms, p99 {ordered[int(0.99 * (len(ordered) - 1))]:.2f} ms"


def zipf_paths(models: int, count: int, s: float = 1.1, seed: int = 0) -> list[str]:
    """``count`` model paths drawn with P(rank k) ∝ k^-s over ``models`` models."""
    weights = 1 / np.arange(1, models + 1) ** s
    ranks = np.random.default_rng(seed).choice(models, size=count, p=weights / weights.sum())
    return [f"/v2/models/m{rank:04d}/infer" for rank in ranks]


def rated(server: Server, paths: list[str], folder: Path, connections: int, seconds: float) -> Rate | str:
    """Checked answers a second, and the server's CPU time per answer (µs): on a shared machine the rate
    moves with what else runs, the CPU a request costs hardly does."""
    cpu_before = server.cpu_s()
    result = wrk_rate(server.url, paths, folder, connections, seconds)
    if isinstance(result, str):
        return result
    rate, answered = result
    return rate, (server.cpu_s() - cpu_before) / answered * 1e6


def wrk_rate(url: str, paths: list[str], folder: Path, connections: int, seconds: float) -> tuple[float, int] | str:
    """Checked answers a second over ``paths`` (in turn) and their count, or why no rate is printed."""
    (folder / "zipf.lua").write_text(ZIPF_SCRIPT)
    (folder / "body.json").write_bytes(body())
    (folder / "paths.txt").write_text("\n".join(paths) + "\n")
    arguments = [str(folder / "body.json"), str(folder / "paths.txt")]
    counts = checked_wrk(url, connections, seconds, folder / "zipf.lua", arguments)
    if isinstance(counts, str):
        return counts
    return float(counts["ok"] / (counts["duration_us"] / 1e6)), int(counts["ok"])


def line(name: str, value: str, aim: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("  [met]" if met else "  [NOT met]")
    print(f"  {name:<38} {value:<52} {aim}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--budget-models", type=int, default=200, help="sessions the memory budget holds")
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput run")
    parser.add_argument("--connections", default="1,16", help="throughput at each (comma-separated)")
    parser.add_argument("--cold", type=int, default=100, help="requests to models not loaded")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds (best of each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-many-") as temporary:
        run(Path(temporary), args)


def run(folder: Path, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    spec_file, size = build(folder, args.models)
    cost = estimate_bytes(size, 192 * 1024)
    budget_mb = args.budget_models * cost / 2**20
    built_s = time.perf_counter() - started
    print(f"{args.models} models of {size} bytes built in {built_s:.1f} s; budget {budget_mb:.1f} MiB")
    print(f"({args.budget_models} sessions of {cost} estimated bytes); load average {os.getloadavg()[0]:.1f}")
    spec = json.loads(spec_file.read_text())
    single_spec = folder / "single.json"
    single_spec.write_text(json.dumps({**spec, "deployments": spec["deployments"][:1]}))
    single = Server(single_spec, 0)
    try:
        many = Server(spec_file, budget_mb)
        try:
            measure(single, many, folder, args)
        finally:
            many.stop()
    finally:
        single.stop()
    print(f"load average at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores, shared with other work)")


def measure(single: Server, many: Server, folder: Path, args: argparse.Namespace) -> None:
    figures: dict[str, Any] = {"ready_s": many.ready_s, "rss_ready": many.rss_mb()}
    deadline = time.perf_counter() + 300
    while many.memory()["loading"] or len(many.memory()["resident"]) < min(args.budget_models, args.models):
        if time.perf_counter() > deadline:
            break
        time.sleep(0.2)
    payload, hot = body(), "/v2/models/m0000/infer"
    with httpx.Client(base_url=single.url, timeout=30) as client:
        latencies(client, [hot] * 50, payload)
    figures["rss_single"], figures["rss_warm"], figures["memory_warm"] = single.rss_mb(), many.rss_mb(), many.memory()
    with httpx.Client(base_url=many.url, timeout=30) as client:
        latencies(client, [hot] * 50, payload)
        figures["warm"] = latencies(client, [hot] * 500, payload)
        resident = {entry["model"] for entry in many.memory()["resident"]}
        cold_models = [f"m{n:04d}" for n in range(args.models - 1, -1, -1) if f"m{n:04d}" not in resident]
        figures["cold"] = latencies(client, [f"/v2/models/{name}/infer" for name in cold_models[: args.cold]], payload)
    head = zipf_paths(min(args.budget_models // 2, args.models), 20000)
    connections = [int(count) for count in args.connections.split(",")]
    rates: dict[str, list[Rate | str]] = {f"{kind}-{count}": [] for kind in ("single", "head") for count in connections}
    with httpx.Client(base_url=many.url, timeout=30) as client:
        latencies(client, sorted(set(head)), payload)  # the cold phase may have evicted some of them
    loads_before = many.memory()["loads"].get("ok", 0)
    for _ in range(args.rounds):  # interleaved: what the shared machine does lands on both alike
        for count in connections:
            rates[f"single-{count}"].append(rated(single, [hot], folder, count, args.seconds))
            rates[f"head-{count}"].append(rated(many, head, folder, count, args.seconds))
    figures["head_loads"] = many.memory()["loads"].get("ok", 0) - loads_before
    mix = zipf_paths(args.models, 20000, seed=1)
    rates[f"mix-{connections[-1]}"] = [rated(many, mix, folder, connections[-1], args.seconds)]
    figures["rates"] = {name: best(values) for name, values in rates.items()}
    figures["final"] = many.memory()
    report(args, figures)


def best(values: list[Rate | str]) -> Rate | str:
    """The best rate and the least CPU per answer of the rounds, or why one round printed no rate."""
    refused = [value for value in values if isinstance(value, str)]
    if refused:
        return refused[0]
    measured = [value for value in values if not isinstance(value, str)]
    return max(rate for rate, _ in measured), min(cpu for _, cpu in measured)


def report(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    print(f"\n{args.models} models, budget {args.budget_models} sessions:")
    ready_s = figures["ready_s"]
    line("start-up to ready (process start)", f"{ready_s:.1f} s", "aim <= 30 s", ready_s <= AIMS["ready_s"])
    memory, resident = figures["memory_warm"], len(figures["memory_warm"]["resident"])
    line("resident memory at ready", f"{figures['rss_ready']:.0f} MiB")
    line("resident memory, warm-up done", f"{figures['rss_warm']:.0f} MiB ({resident} sessions)")
    line("single-model gateway, for comparison", f"{figures['rss_single']:.0f} MiB (1 session)")
    counted = memory["budget"]["cpu"]["used_bytes"] / 2**20
    extra = figures["rss_warm"] - figures["rss_single"]
    line("  more than single vs estimates counted", f"{extra:.1f} MiB vs {counted:.1f} MiB")
    line("warm model (sequential)", percentiles(figures["warm"]))
    cold = figures["cold"]
    cold_p99 = None if isinstance(cold, str) else sorted(cold)[int(0.99 * (len(cold) - 1))]
    met = None if cold_p99 is None else cold_p99 <= AIMS["cold_p99_ms"]
    line(f"cold model ({args.cold} not loaded)", percentiles(cold), "aim p99 <= 200 ms", met)
    for name, rate in figures["rates"].items():
        kind, count = name.split("-")
        baseline = figures["rates"][f"single-{count}"]
        label = {"single": "single-model gateway", "head": f"zipf over the {args.budget_models // 2} that fit"}
        label["mix"] = f"zipf over all {args.models} models"
        title = f"{label[kind]}, {count} conn."
        if isinstance(rate, str) or isinstance(baseline, str):
            line(title, str(rate))
            continue
        if kind == "single":
            line(title, f"{rate[0]:.0f} req/s, {rate[1]:.0f} µs CPU/request")
            continue
        capacity = baseline[1] / rate[1]  # answers per CPU second, against the single-model gateway's
        verdict = capacity >= AIMS["warm_ratio"] if kind == "head" else None
        value = f"{rate[0]:.0f} req/s (x{rate[0] / baseline[0]:.2f}), {rate[1]:.0f} µs CPU (x{capacity:.2f})"
        line(title, value, "aim >= 0.90 (CPU)" if verdict is not None else "", verdict)
    line("  loads during the 'fit' runs", str(figures["head_loads"]))
    final = figures["final"]
    line("loads / evictions in all", f"{final['loads']} / {final['evictions']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
