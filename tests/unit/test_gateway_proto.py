"""The gateway's gRPC modules: generated from the .proto as it is (regenerate with
``python -m services.gateway.proto.generate``), and on the wire the same as Triton's for every message and
method the gateway serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor
from tritonclient.grpc import service_pb2 as triton_pb

from services.gateway.proto import generate
from services.gateway.proto import grpc_predict_v2_pb2 as pb


def test_the_generated_modules_are_not_stale() -> None:
    for name, text in generate.generate().items():
        committed = (generate.HERE / name).read_text()
        assert committed == text, f"{name} is stale: run python -m services.gateway.proto.generate and commit"


def test_the_staleness_check_would_see_a_changed_proto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = generate.HERE / "grpc_predict_v2.proto"
    copy = tmp_path / "services" / "gateway" / "proto" / "grpc_predict_v2.proto"
    copy.parent.mkdir(parents=True)
    copy.write_text(changed.read_text().replace("bool live = 1;", "bool live = 1;\n  string why = 2;"))
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "PROTO", copy)
    regenerated = generate.generate()
    assert regenerated[generate.OUTPUTS[0]] != (generate.HERE / generate.OUTPUTS[0]).read_text()


def fields(descriptor: Descriptor) -> dict[str, tuple[int, int, str]]:
    """Each field's number, type and (for a message) its type's name, nested messages included."""
    found = {
        field.name: (field.number, field.type, field.message_type.name if field.message_type else "")
        for field in descriptor.fields
    }
    for nested in descriptor.nested_types:
        found.update({f"{nested.name}.{name}": value for name, value in fields(nested).items()})
    return found


@pytest.mark.parametrize("message", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_every_message_is_triton_s_on_the_wire(message: str) -> None:
    ours, triton = pb.DESCRIPTOR.message_types_by_name[message], triton_pb.DESCRIPTOR.message_types_by_name[message]
    assert fields(ours) == fields(triton)


def test_every_method_is_one_of_triton_s() -> None:
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    triton = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == triton.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        theirs = triton.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            theirs.input_type.full_name,
            theirs.output_type.full_name,
        )
