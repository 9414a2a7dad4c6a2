"""Compression: magnitude pruning (in torch, before export) and int8 dynamic quantization (of ONNX)."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn
from torch.nn.utils import prune

from services.trainer.adapters.torch_models import prunable_layers

# Conv would become ConvInteger, which runs 8-9x slower than fp32 Conv on CPU: only the dense
# layers are quantized. Linear exports as Gemm (2-D input) or MatMul.
QUANTIZED_OPS = ["MatMul", "Gemm"]


def prune_weights(model: nn.Module, fraction: float) -> None:
    """Zero the smallest-magnitude ``fraction`` of each layer's weights (a mask; biases kept)."""
    for layer in prunable_layers(model):
        prune.l1_unstructured(layer, name="weight", amount=fraction)


def make_pruning_permanent(model: nn.Module) -> None:
    """Fold the masks into the weights, so the exported graph is a plain one with zeros."""
    for layer in prunable_layers(model):
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")


def sparsity(model: nn.Module) -> float:
    """Share of exactly-zero weights among the prunable layers."""
    weights = [layer.weight.detach() for layer in prunable_layers(model)]
    total = sum(weight.numel() for weight in weights)
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    return zeros / total if total else 0.0


def quantize_int8(source: Path, target: Path) -> Path:
    """int8 dynamic quantization of the dense layers' weights; activations stay float at the edges."""
    # Imported here: the quantization tool pulls in a lot, and only compressed runs need it.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the tool warns through the root logger
    root.addFilter(_drop_preprocessing_hint)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
    finally:
        root.removeFilter(_drop_preprocessing_hint)
    return target


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    """The tool's "consider pre-processing" hint is noise for these small static graphs."""
    return "consider to run pre-processing" not in record.getMessage()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable values (weights and biases)."""
    return sum(parameter.numel() for parameter in model.parameters())
