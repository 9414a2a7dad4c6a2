"""The servers gateway_bench.py measures, each started as its own process on 127.0.0.1:

- ``minimal``: a plain ASGI app that decodes the OIP JSON body, calls ``session.run`` and answers (the
  HTTP floor), on uvicorn with httptools and uvloop, as the gateway;
- ``gateway``: the Ferry gateway app, metrics, access log, rate limits and canary routing on, serving
  the model as a deployment (champion plus a 10 % canary of the same file) without registry or Kafka;
- TorchServe and Seldon MLServer, each installed by :func:`peer_venv` into its own venv under
  ``.ferry/bench/`` on first use, never into the project's venv. Their heavy shared dependencies
  (numpy, ONNX Runtime, torch for TorchServe's worker) come from the project's site-packages through a
  ``.pth`` file, so that every server runs the same ONNX Runtime build. Each takes its configuration
  as arguments (TorchServe: workers, batch size, batch delay; MLServer: worker pool or in process,
  adaptive batching), so the bench can measure every one and compare against the best.

    python bench/gateway_servers.py minimal|gateway PORT WORKERS MODEL_FILE
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.local.ports import free_port  # noqa: E402

BENCH_HOME = ROOT / ".ferry" / "bench"
UVICORN: dict[str, Any] = {
    "http": "httptools",
    "loop": "uvloop",
    "log_config": None,
    "access_log": False,
    "backlog": 4096,
}


# --- the HTTP floor ------------------------------------------------------------------------------


def minimal_app() -> Any:
    """Raw ASGI + ONNX Runtime: no validation, no metrics, no routing."""
    import numpy as np
    import onnxruntime as ort
    from pydantic_core import from_json

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.environ["FERRY_BENCH_MODEL"], options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        tensor = from_json(body)["inputs"][0]
        rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        output = session.run(None, {input_name: rows})[0]
        answer = json.dumps(
            {
                "model_name": "bench",
                "outputs": [
                    {
                        "name": "probabilities",
                        "datatype": "FP32",
                        "shape": list(output.shape),
                        "data": output.ravel().tolist(),
                    }
                ],
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


# --- the Ferry gateway ---------------------------------------------------------------------------


def gateway_app() -> Any:
    """The gateway as a worker builds it, with a fixed deployment in place of the registry and Kafka."""
    from services.gateway.bootstrap import bootstrap, kafka_log_sink
    from services.gateway.domain import Deployment, VersionSpec
    from services.gateway.entrypoints.api import create_app
    from services.gateway.sample_models import classifier_signature
    from services.gateway.settings import GatewaySettings
    from shared.artifacts import ArtifactStore
    from shared.settings import FerrySettings
    from shared.telemetry import setup_telemetry

    class Fixed:
        def __init__(self, deployment: Deployment) -> None:
            self.deployment = deployment

        def deployments(self) -> list[Deployment]:
            return [self.deployment]

    data = Path(os.environ["FERRY_BENCH_MODEL"]).read_bytes()
    store = ArtifactStore(tempfile.mkdtemp(prefix="ferry-bench-store-"))
    _, sha256, size = store.put_bytes(data)
    signature = classifier_signature(64, 10)  # the bench's model (gateway_bench.py builds it)
    champion, canary = VersionSpec(1, sha256, size, signature), VersionSpec(2, sha256, size, signature)
    settings = GatewaySettings(ferry=FerrySettings(artifact_root=store.root), device="cpu", rate_limit_rps=1e9)
    setup_telemetry("gateway", log_level="INFO")
    deployment = Deployment("bench", 2, champion=champion, challenger=canary, canary_weight=0.1)
    # gateway_logging.py's rows log to a real broker (FERRY_KAFKA_BOOTSTRAP) at FERRY_GATEWAY_LOG_SAMPLE.
    log_sink = kafka_log_sink(settings) if os.environ.get("FERRY_BENCH_LOG_KAFKA") else None
    app = create_app(bootstrap(settings, source=Fixed(deployment), store=store, follow_kafka=False, log_sink=log_sink))
    gc.freeze()  # as services.gateway.__main__ does
    return app


def serve(kind: str, port: int, workers: int, model: str) -> None:
    import uvicorn

    os.environ["FERRY_BENCH_MODEL"] = str(Path(model).resolve())
    factory = {"minimal": "gateway_servers:minimal_app", "gateway": "gateway_servers:gateway_app"}[kind]
    uvicorn.run(
        factory,
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        app_dir=str(Path(__file__).parent),
        lifespan="on" if kind == "gateway" else "off",
        **UVICORN,
    )


# --- peers in their own venvs ----------------------------------------------------------------------


def project_site_packages() -> list[str]:
    return [path for path in sys.path if path.endswith("site-packages") and Path(path).is_dir()]


def peer_venv(name: str, packages: list[str], *, share: bool) -> Path:
    """``.ferry/bench/<name>``: created and filled on first use; returns its python."""
    home = BENCH_HOME / name
    python = home / "bin" / "python"
    stamp = home / ".installed"
    if stamp.exists() and stamp.read_text() == " ".join(packages):
        return python
    print(f"  installing {name} into {home} (first use) ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    if share:
        site = next((home / "lib").glob("python3*/site-packages"))
        (site / "ferry_project.pth").write_text("\n".join(project_site_packages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages], check=True)
    stamp.write_text(" ".join(packages))
    return python


TORCHSERVE_HANDLER = '''
import json, os
import numpy as np
import onnxruntime as ort

class OnnxHandler:
    """The same OIP v2 JSON in and out as the other servers; TorchServe batches the requests."""

    def initialize(self, context):
        directory = context.system_properties.get("model_dir")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(directory, "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def handle(self, data, context):
        tensors = []
        for row in data:
            body = row.get("body") or row.get("data")
            body = json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
            tensor = body["inputs"][0]
            tensors.append(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]))
        output = self.session.run(None, {self.input_name: np.concatenate(tensors)})[0]
        answers, start = [], 0
        for tensor in tensors:
            part = output[start:start + len(tensor)]
            start += len(tensor)
            answers.append({"model_name": "bench", "outputs": [{"name": "probabilities", "datatype": "FP32",
                            "shape": list(part.shape), "data": part.ravel().tolist()}]})
        return answers

_service = OnnxHandler()

def handle(data, context):
    if not getattr(_service, "session", None):
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)
'''


def torchserve(
    model: Path, port: int, cores: int, *, workers: int, batch_size: int, max_batch_delay_ms: int
) -> tuple[list[str], dict[str, str], str]:
    """(command, environment, URL path) of a TorchServe serving ``model`` with ``workers`` Python workers,
    each handed batches of up to ``batch_size`` requests gathered for at most ``max_batch_delay_ms``."""
    python = peer_venv("torchserve", ["torchserve==0.12.0", "torch-model-archiver==0.12.0", "pyyaml"], share=True)
    work = BENCH_HOME / "torchserve-run"
    store = work / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    (work / "handler.py").write_text(TORCHSERVE_HANDLER)
    (work / "model-config.yaml").write_text(
        f"minWorkers: {workers}\nmaxWorkers: {workers}\nbatchSize: {batch_size}\nmaxBatchDelay: {max_batch_delay_ms}\n"
    )
    subprocess.run(
        [
            str(python.parent / "torch-model-archiver"),
            "--model-name",
            "bench",
            "--version",
            "1.0",
            "--serialized-file",
            str(model),
            "--handler",
            str(work / "handler.py"),
            "--export-path",
            str(store),
            "--config-file",
            str(work / "model-config.yaml"),
            "--force",
        ],
        check=True,
    )
    if not (store / "bench.mar").exists():
        raise RuntimeError("torch-model-archiver made no bench.mar")
    # model.onnx is the name the handler opens: the archiver keeps the serialized file's own name.
    config = work / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\ndisable_token_authorization=true\nenable_envvars_config=true\n"
        f"number_of_netty_threads={cores}\ndefault_workers_per_model={workers}\nmodel_store={store}\n"
        "load_models=bench.mar\ninstall_py_dep_per_model=false\n"
    )
    command = [
        str(python.parent / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config),
        "--model-store",
        str(store),
        "--disable-token-auth",
    ]
    # TorchServe writes its logs under the working directory unless told: keep them in the run folder.
    logs = {"LOG_LOCATION": str(work / "logs"), "METRICS_LOCATION": str(work / "logs")}
    return command, {**os.environ, **logs, "PATH": f"{python.parent}:{os.environ['PATH']}"}, "/predictions/bench"


MLSERVER_MODEL = """
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        output = self.session.run(None, {self.input_name: rows})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", output)])
"""


def mlserver(
    model: Path,
    port: int,
    *,
    parallel_workers: int,
    max_batch_size: int = 0,
    max_batch_time_s: float = 0.0,
    grpc_port: int | None = None,
) -> tuple[list[str], dict[str, str], str]:
    """(command, environment, URL path) of Seldon MLServer serving ``model`` through OIP v2, with its
    access log off (``debug: false``). ``parallel_workers: 0`` runs inference in the server's process;
    N > 0 hands every request to a pool of N worker processes. ``max_batch_size`` > 1 turns on its
    adaptive batching (requests gathered for at most ``max_batch_time_s``). Its gRPC server (the same OIP
    v2 service) listens on ``grpc_port``, or on a free port nobody uses."""
    python = peer_venv("mlserver", ["mlserver==1.7.1", "uvloop<0.22"], share=True)
    work = BENCH_HOME / "mlserver-run"
    (work / "bench").mkdir(parents=True, exist_ok=True)
    (work / "ort_model.py").write_text(MLSERVER_MODEL)
    (work / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": grpc_port or free_port(),
                "metrics_port": free_port(),
                "host": "127.0.0.1",
                "parallel_workers": parallel_workers,
                "debug": False,
            }
        )
    )
    (work / "bench" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "implementation": "ort_model.OnnxModel",
                "parameters": {"uri": str(model)},
                "max_batch_size": max_batch_size,
                "max_batch_time": max_batch_time_s,
            }
        )
    )
    command = [str(python.parent / "mlserver"), "start", str(work)]
    return command, {**os.environ, "PYTHONPATH": str(work)}, "/v2/models/bench/infer"


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
