"""Surgery on an uploaded ONNX graph, so that what is stored has the trainer's shape: one output, Ferry's
tensor names, a regressor's value as a column; and the newest opset this ONNX Runtime loads."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MIN_OPSET = 7  # the oldest opset ONNX Runtime loads


@functools.cache
def supported_opset() -> int:
    """The newest ai.onnx opset this ONNX Runtime loads, found once by opening a one-node graph."""
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET, -1):
        try:
            ort.InferenceSession(_identity_model(opset), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001, S112 - too new for this runtime: try the one before
            continue
        return opset
    return MIN_OPSET


def _identity_model(opset: int) -> bytes:
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [tensor], [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def keep_output(model: onnx.ModelProto, name: str) -> None:
    """Make ``name`` the only graph output (the nodes that fed the others stay, unused; ORT prunes them)."""
    kept = [output for output in model.graph.output if output.name == name]
    del model.graph.output[:]
    model.graph.output.extend(kept)


def as_column(model: onnx.ModelProto, name: str) -> None:
    """Turn the output ``name`` of shape [batch] into [batch, 1], keeping its name: a Reshape at the end, as
    the trainer's regressors give one value per row in a column."""
    graph = model.graph
    taken = set(_names(graph))
    flat = _fresh(f"{name}_flat", taken)
    shape = _fresh(f"{name}_column", taken | {flat})
    _rename_graph(graph, {name: flat})
    [output] = [value for value in graph.output if value.name == flat]
    output.name = name
    output.type.tensor_type.shape.dim.add().dim_value = 1
    # A Constant node rather than an initializer: an old IR version wants every initializer among the inputs.
    column = numpy_helper.from_array(np.array([-1, 1], dtype=np.int64))
    graph.node.append(helper.make_node("Constant", [], [shape], value=column))
    graph.node.append(helper.make_node("Reshape", [flat, shape], [name]))


def rename(model: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename tensors everywhere in the graph and its subgraphs, all at once; a tensor that already has one
    of the new names gets a fresh name first, so that no two tensors ever share one."""
    taken = set(_names(model.graph))
    mapping = dict(renames)
    for wanted in renames.values():
        if wanted in taken and wanted not in renames:
            mapping[wanted] = _fresh(wanted, taken | set(renames.values()))
    _rename_graph(model.graph, mapping)


def _fresh(name: str, taken: set[str]) -> str:
    suffix = 1
    while f"{name}_{suffix}" in taken:
        suffix += 1
    return f"{name}_{suffix}"


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found.append(attribute.g)
            found.extend(attribute.graphs)
    return found


def _names(graph: onnx.GraphProto) -> list[str]:
    names = [value.name for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)]
    names += [name for node in graph.node for name in (*node.input, *node.output)]
    return names + [name for subgraph in _subgraphs(graph) for name in _names(subgraph)]


def _rename_graph(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
    for subgraph in _subgraphs(graph):
        _rename_graph(subgraph, mapping)
