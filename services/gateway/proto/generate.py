"""Regenerate the gRPC modules from ``grpc_predict_v2.proto``: ``python -m services.gateway.proto.generate``.

protoc (``python -m grpc_tools.protoc``) writes ``grpc_predict_v2_pb2.py`` (with its ``.pyi``) and
``grpc_predict_v2_pb2_grpc.py``; one change follows: the messages go into a descriptor pool of their own
instead of protobuf's default pool. The protocol's package is ``inference``, the same as Triton's
``grpc_service.proto`` that ``tritonclient.grpc`` registers in the default pool, and two files defining
``inference.ServerLiveRequest`` in one pool refuse to load: with a pool of its own, the gateway and a
Triton client live in one process (the tests, a notebook). The wire format is the same either way.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROTO = HERE / "grpc_predict_v2.proto"
STEM = "grpc_predict_v2"
OUTPUTS = (f"{STEM}_pb2.py", f"{STEM}_pb2.pyi", f"{STEM}_pb2_grpc.py")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate() -> dict[str, str]:
    """The generated modules' text by file name, from the .proto as it is now."""
    from grpc_tools import protoc  # a dev dependency: only regeneration needs it

    with tempfile.TemporaryDirectory() as folder:
        relative = PROTO.relative_to(ROOT)
        arguments = ["protoc", f"-I{ROOT}", f"--python_out={folder}", f"--pyi_out={folder}"]
        arguments += [f"--grpc_python_out={folder}", str(relative)]
        if protoc.main(arguments) != 0:
            raise RuntimeError(f"protoc failed on {relative}")
        written = Path(folder) / relative.parent
        texts = {name: (written / name).read_text() for name in OUTPUTS}
    if texts[OUTPUTS[0]].count(_DEFAULT_POOL) != 1:
        raise RuntimeError("protoc's output changed shape: the default descriptor pool is no longer used once")
    texts[OUTPUTS[0]] = texts[OUTPUTS[0]].replace(_DEFAULT_POOL, _OWN_POOL)
    return texts


def main() -> int:
    for name, text in generate().items():
        (HERE / name).write_text(text)
        print(f"wrote {(HERE / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
