"""The bench's gRPC load generator (ghz is not available here): a closed loop over N gRPC channels, each its
own HTTP/2 connection with one call in flight (the next sent when the last answer has arrived), for a fixed
time, calling OIP v2's ``ModelInfer`` with one raw FP32 row, as ``tritonclient.grpc`` sends it. An answer
counts only when its status is OK and it carries the output tensor with the expected number of bytes;
:func:`grpc_load` refuses to print a rate when any call did not count.

    python bench/gateway_grpc_load.py TARGET MODEL ROW_FILE OUTPUTS CONNECTIONS SECONDS OUT_FILE

writes one JSON object to OUT_FILE: {"ok": n, "failed": n, "statuses": {...}, "seconds": s,
"latencies_ms": [...]} (ROW_FILE: the row's raw little-endian FP32 bytes; OUTPUTS: the output's length).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway_load import summary  # noqa: E402

from services.gateway.proto import grpc_predict_v2_pb2 as pb  # noqa: E402
from services.gateway.proto import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

OUTPUT = "probabilities"
# Without a local subchannel pool, channels to one target share one connection: N channels must be N.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def infer_request(model: str, row: np.ndarray) -> pb.ModelInferRequest:
    """``ModelInfer`` of ``row`` (FP32), raw, as tritonclient.grpc sends it."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=row.shape)
    request.raw_input_contents.append(np.ascontiguousarray(row, dtype="<f4").tobytes())
    return request


def output_of(response: pb.ModelInferResponse) -> np.ndarray | None:
    """The answer's output tensor, raw or typed (MLServer answers typed to a raw request)."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name == OUTPUT:
            if response.raw_output_contents:
                return np.frombuffer(response.raw_output_contents[index], dtype="<f4")
            return np.asarray(tensor.contents.fp32_contents or tensor.contents.fp64_contents, dtype=np.float32)
    return None


def first_answer(target: str, model: str, row: np.ndarray, timeout_s: float = 180) -> np.ndarray:
    """The server's answer to ``row`` over gRPC, once it answers (for the bench's check of its values)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                answer = output_of(stub.ModelInfer(infer_request(model, row), timeout=10))
                if answer is None:
                    raise RuntimeError(f"{target} answers without the {OUTPUT} tensor")
                return answer
            except grpc.RpcError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target} not answering over gRPC: {error.code()}") from error
                time.sleep(0.5)


async def run(target: str, request: pb.ModelInferRequest, size: int, connections: int, seconds: float) -> dict:
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(connections)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds

    async def loop(channel: grpc.aio.Channel) -> None:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        while (started := time.perf_counter()) < stop_at:
            try:
                answer = output_of(await call(request, timeout=30))
                status = "OK" if answer is not None and answer.size == size else "OK without the output tensor"
            except grpc.aio.AioRpcError as error:
                status = error.code().name
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    await asyncio.gather(*(loop(channel) for channel in channels))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    ok = statuses.get("OK", 0)
    return {
        "ok": ok,
        "failed": len(latencies) - ok,
        "statuses": statuses,
        "seconds": elapsed,
        "latencies_ms": [round(value * 1000, 4) for value in latencies],
    }


def grpc_load(
    target: str, model: str, row_file: Path, outputs: int, connections: int, seconds: float
) -> dict[str, float] | str:
    """This file as a separate process against ``target``: the summary, or why no rate is printed."""
    out_file = row_file.with_name("grpc-load-result.json")
    command = [sys.executable, __file__, target, model, str(row_file), str(outputs), str(connections), str(seconds)]
    result = subprocess.run([*command, str(out_file)], capture_output=True, text=True, timeout=seconds + 120)
    if result.returncode != 0:
        return f"grpc load generator failed: {result.stderr.strip()[-200:]}"
    answer = json.loads(out_file.read_text())
    if answer["failed"] or answer["ok"] != len(answer["latencies_ms"]) or not answer["ok"]:
        return f"refused to rate: {answer['ok']} checked OKs of {len(answer['latencies_ms'])} ({answer['statuses']})"
    return summary(answer["ok"], answer["seconds"], answer["latencies_ms"])


def main() -> int:
    target, model, row_file, outputs, connections, seconds, out_file = sys.argv[1:8]
    row = np.frombuffer(Path(row_file).read_bytes(), dtype="<f4").reshape(1, -1)
    request = infer_request(model, row)
    result = asyncio.run(run(target, request, int(outputs), int(connections), float(seconds)))
    Path(out_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
