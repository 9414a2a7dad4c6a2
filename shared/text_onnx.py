"""The front of a text model's graph: strings in, the network's fixed-length token ids out.

``with_text_input`` puts it before a network exported from torch (which takes the ids as FP32
[batch, max_length]), so the served file takes ``text``, a BYTES tensor [batch], and any Open Inference
Protocol client sends plain strings: nothing outside ONNX Runtime tokenises. The steps are those of
``shared.text`` (see there): ``StringNormalizer`` (lower-case, "C" locale: the one every machine has),
``com.microsoft.Tokenizer`` (split on the separators, pad with a space: no token can be one),
``ai.onnx.ml.LabelEncoder`` (token → id, unknown → 1, the pad → 0), then Pad and Slice to exactly
``max_length`` ids, and a Cast to the network's FP32.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, compose, helper

from shared.text import PAD_ID, SEPARATORS, UNKNOWN_ID, Vocabulary

TEXT_INPUT_NAME = "text"
IDS_NAME = "text_prefix/token_ids"
"""The front's output, the network's input: the fixed-length ids as FP32."""
_PAD_TOKEN = " "  # a separator: never a token, so it can only be the tokeniser's padding
_ML_OPSET = 2  # LabelEncoder with keys_strings / values_int64s
_MS_OPSET = 1
_MAX_IR_VERSION = 10  # ONNX Runtime 1.31 refuses ir_version 14; torch's exporter writes 8


def _inner(name: str) -> str:
    """A name inside the front, apart from any name the torch exporter gives the network's tensors."""
    return f"text_prefix/{name}"


def _nodes(vocabulary: Vocabulary) -> list[onnx.NodeProto]:
    known = vocabulary.ids()
    lowered, pieces, ragged, padded, fixed = map(_inner, ("lowered", "pieces", "ids_ragged", "ids_padded", "ids"))
    return [
        helper.make_node("StringNormalizer", [TEXT_INPUT_NAME], [lowered], case_change_action="LOWER", locale="C"),
        helper.make_node(
            "Tokenizer",
            [lowered],
            [pieces],
            domain="com.microsoft",
            mark=0,
            mincharnum=1,
            pad_value=_PAD_TOKEN,
            separators=list(SEPARATORS),
        ),
        helper.make_node(
            "LabelEncoder",
            [pieces],
            [ragged],
            domain="ai.onnx.ml",
            keys_strings=[_PAD_TOKEN, *known],
            values_int64s=[PAD_ID, *known.values()],
            default_int64=UNKNOWN_ID,
        ),
        # At least max_length ids (a batch of empty texts has none), then exactly max_length.
        helper.make_node("Pad", [ragged, _inner("pads")], [padded], mode="constant"),
        helper.make_node("Slice", [padded, *map(_inner, ("starts", "ends", "axes"))], [fixed]),
        helper.make_node("Cast", [fixed], [IDS_NAME], to=TensorProto.FLOAT),
    ]


def text_prefix(vocabulary: Vocabulary, *, opset: int, ir_version: int) -> onnx.ModelProto:
    """STRING [batch] → FP32 [batch, max_length] token ids, as :meth:`Vocabulary.encode` computes them."""
    length = vocabulary.max_length
    constants = [
        helper.make_tensor(_inner(name), TensorProto.INT64, [len(values)], values)
        for name, values in (("pads", [0, 0, 0, length]), ("starts", [0]), ("ends", [length]), ("axes", [1]))
    ]
    graph = helper.make_graph(
        _nodes(vocabulary),
        "text_prefix",
        [helper.make_tensor_value_info(TEXT_INPUT_NAME, TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info(IDS_NAME, TensorProto.FLOAT, ["batch", length])],
        initializer=constants,
    )
    opsets = [
        helper.make_opsetid("", opset),
        helper.make_opsetid("ai.onnx.ml", _ML_OPSET),
        helper.make_opsetid("com.microsoft", _MS_OPSET),
    ]
    return helper.make_model(graph, opset_imports=opsets, ir_version=min(ir_version, _MAX_IR_VERSION))


def with_text_input(network_path: Path, vocabulary: Vocabulary, path: Path) -> Path:
    """Write the network behind the text prefix to ``path``: one file, input ``text``, the network's outputs."""
    network = onnx.load(str(network_path))
    (network_input,) = network.graph.input
    opset = next(entry.version for entry in network.opset_import if entry.domain in ("", "ai.onnx"))
    network.ir_version = min(network.ir_version, _MAX_IR_VERSION)
    prefix = text_prefix(vocabulary, opset=opset, ir_version=network.ir_version)
    for entry in prefix.opset_import:  # merge_models wants one opset per domain on both sides
        if entry.domain not in {existing.domain for existing in network.opset_import}:
            network.opset_import.append(entry)
    merged = compose.merge_models(prefix, network, io_map=[(IDS_NAME, network_input.name)])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(path))
    return path
