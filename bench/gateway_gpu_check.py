"""GPU check of the gateway, for a machine with an NVIDIA GPU (run once by hand; not a test):

    .venv/bin/python bench/gateway_gpu_check.py [--swaps 20] [--seconds 5]

1. builds a ~64 MB ONNX classifier with onnx.helper (no training, no download);
2. loads it through the gateway's own adapter with device=cuda and confirms that
   ``session.get_providers()[0]`` is CUDAExecutionProvider;
3. serves it through the real gateway app (uvicorn, in this process) and hot-swaps a new version in
   ``--swaps`` times, reading GPU memory after each swap (nvidia-smi, else pynvml, else torch): memory
   must stay flat (each swap releases the version it retires), and drop when every version is unloaded;
4. drives a short local load (16 connections) at it: every answer 200, from CUDA, equal to the CPU
   reference within 1e-3.

Prints one summary and exits 0 when every check passed, 1 otherwise. Takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.gateway.adapters.onnx_runtime import OnnxLoader  # noqa: E402
from services.gateway.bootstrap import bootstrap  # noqa: E402
from services.gateway.domain import Deployment, VersionSpec  # noqa: E402
from services.gateway.entrypoints.api import create_app  # noqa: E402
from services.gateway.sample_models import classifier_bytes, classifier_signature, reference_probabilities  # noqa: E402
from services.gateway.settings import GatewaySettings  # noqa: E402
from shared.artifacts import ArtifactStore  # noqa: E402
from shared.local.ports import free_port  # noqa: E402
from shared.onnx import CPU, CUDA  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402
from shared.waiting import wait_for  # noqa: E402

FEATURES, HIDDEN, CLASSES = 2048, 8192, 10  # 2048 x 8192 fp32 weights: 64 MiB per version


def gpu_memory_mib() -> float | None:
    """Memory used on the first visible GPU, by whichever tool is there."""
    if shutil.which("nvidia-smi"):
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode == 0 and done.stdout.strip():
            return float(done.stdout.split()[0])
    try:
        import pynvml

        pynvml.nvmlInit()
        return float(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used) / 2**20
    except Exception:  # noqa: BLE001 - try the next tool
        pass
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
        return float(total - free) / 2**20
    except Exception:  # noqa: BLE001 - no way to read it
        return None


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def record(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append((name, ok, detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="GPU check of the Ferry gateway")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a dry run of the script")
    args = parser.parse_args()
    checks = Checks()
    started = time.monotonic()
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, available providers {ort.get_available_providers()}", flush=True)
    signature = classifier_signature(FEATURES, CLASSES)
    models = {seed: classifier_bytes(FEATURES, CLASSES, seed=seed, hidden=HIDDEN) for seed in (1, 2)}
    probe = OnnxLoader(device=args.device).load(models[1], signature)
    active = probe.session.get_providers() if probe.session else []
    probe.close()
    wanted = CUDA if args.device == "cuda" else CPU
    if not checks.record(f"{wanted} active", bool(active) and active[0] == wanted, f"session providers {active}"):
        return report(checks, started)
    work = Path(tempfile.mkdtemp(prefix="ferry-gpu-check-"))
    store = ArtifactStore(str(work / "artifacts"))
    specs = {seed: VersionSpec(seed, *store.put_bytes(data)[1:], signature) for seed, data in models.items()}
    try:
        run_gateway(args, checks, store, specs, models)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(checks, started)


def spec_as(version: int, base: VersionSpec) -> VersionSpec:
    return VersionSpec(version, base.sha256, base.size_bytes, base.signature)


def run_gateway(
    args: argparse.Namespace,
    checks: Checks,
    store: ArtifactStore,
    specs: dict[int, VersionSpec],
    models: dict[int, bytes],
) -> None:
    import uvicorn

    port = free_port()
    settings = GatewaySettings(
        ferry=FerrySettings(artifact_root=store.root),
        port=port,
        device=args.device,
        access_log=False,
        inline_run_ms=0.0,
    )
    gateway = bootstrap(settings, source=_Empty(), store=store, follow_kafka=False)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(gateway), host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(url), what="the gateway", timeout_s=60)
    baseline = gpu_memory_mib()
    memory: list[float | None] = []
    try:
        for version in range(1, args.swaps + 1):
            outcome = gateway.deployer.apply(
                Deployment("gpu", version, champion=spec_as(version, specs[1 + version % 2]))
            )
            if outcome != "applied":
                checks.record("hot swap", False, f"version {version}: {outcome}")
                return
            memory.append(gpu_memory_mib())
        status = httpx.get(f"{url}/status").json()["models"]["gpu"]
        served = f"champion v{status['champion']['version']} on {status['champion']['provider']}"
        wanted = CUDA if args.device == "cuda" else CPU
        checks.record(
            "swapped versions served on the device",
            status["champion"]["provider"] == wanted,
            f"{args.swaps} swaps; {served}",
        )
        if args.device == "cuda":
            _check_memory(checks, baseline, memory)
        _check_load(args, checks, url, models[1 + args.swaps % 2])
        loaded_peak = max((value for value in memory if value is not None), default=None)
        unloaded = gateway.deployer.apply(Deployment("gpu", args.swaps + 1))  # no versions: release all
        after = gpu_memory_mib()
        if loaded_peak is not None and after is not None:
            checks.record(
                "memory released when unloaded",
                after < loaded_peak,
                f"{loaded_peak:.0f} MiB loaded -> {after:.0f} MiB unloaded ({unloaded})",
            )
    finally:
        server.should_exit = True
        thread.join(30)


class _Empty:
    def deployments(self) -> list[Deployment]:
        return []


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _check_memory(checks: Checks, baseline: float | None, memory: list[float | None]) -> None:
    readings = [value for value in memory if value is not None]
    if baseline is None or len(readings) < 4:
        checks.record("GPU memory readable", False, "neither nvidia-smi, pynvml nor torch could read GPU memory")
        return
    settled = max(readings[:3])
    allowed = settled + max(256.0, 0.25 * (settled - baseline))
    shown = ", ".join(f"{value:.0f}" for value in readings)
    checks.record(
        "GPU memory flat across swaps",
        max(readings[3:]) <= allowed,
        f"baseline {baseline:.0f} MiB; after each swap: {shown} MiB (allowed <= {allowed:.0f})",
    )


def _check_load(args: argparse.Namespace, checks: Checks, url: str, model: bytes) -> None:
    rows = np.random.default_rng(3).normal(size=(4, FEATURES)).astype(np.float32)
    body = {"inputs": [{"name": "input", "shape": [4, FEATURES], "datatype": "FP32", "data": rows.ravel().tolist()}]}
    answer = httpx.post(f"{url}/v2/models/gpu/infer", json=body, timeout=30).json()
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(4, CLASSES)
    difference = float(np.max(np.abs(got - reference_probabilities(model, rows))))
    checks.record("CUDA answers equal the CPU reference", difference < 1e-3, f"max |difference| {difference:.2e}")
    request = Path(tempfile.mkstemp(suffix=".json")[1])
    one_row = {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": rows[0].tolist()}]}
    request.write_text(json.dumps(one_row))
    out_file = request.with_suffix(".out.json")
    command = [
        sys.executable,
        str(ROOT / "bench" / "gateway_load.py"),
        f"{url}/v2/models/gpu/infer",
        str(request),
        "16",
        str(args.seconds),
        str(out_file),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        checks.record("load through the gateway", False, done.stderr[-300:])
        return
    result = json.loads(out_file.read_text())
    latencies = sorted(result["latencies_ms"]) or [0.0]
    rate = result["ok"] / result["seconds"]
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]
    checks.record(
        "load through the gateway",
        result["ok"] > 0 and result["failed"] == 0,
        f"{result['ok']} answered 200, {result['failed']} failed; {rate:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms",
    )


def report(checks: Checks, started: float) -> int:
    failed = [name for name, ok, _ in checks.results if not ok]
    verdict = "PASSED" if checks.results and not failed else f"FAILED ({', '.join(failed) or 'nothing checked'})"
    print(f"gateway GPU check {verdict} in {time.monotonic() - started:.0f} s")
    return 0 if checks.results and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
