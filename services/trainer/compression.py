"""Compression's rules, pure: how wide a pruned network becomes, which int8 kind ships, and the
ratios that say what compression bought.

No torch and no ONNX Runtime here: the adapters measure and cut; this module decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.trainer.domain import CompressionTooLossy

if TYPE_CHECKING:  # the harness's result, as a type only: this module stays free of ONNX Runtime
    from shared.onnx import Latency

INT8_STATIC = "int8-static"
INT8_DYNAMIC = "int8-dynamic"
INT8_KINDS = (INT8_STATIC, INT8_DYNAMIC)


@dataclass(frozen=True)
class LayerShape:
    """One prunable layer of a chain: its width in units (neurons or channels) and its shape.

    ``inputs_per_unit`` is how many input columns one unit of the previous layer becomes (the
    spatial positions of a channel after a flatten; 1 otherwise). ``weights_per_pair`` is the
    number of weights between one input column and one unit (the kernel's area; 1 when dense).
    ``block``: a pruned width stays a multiple of it (see ``aligned_width``).
    """

    in_units: int
    out_units: int
    weights_per_pair: int = 1
    inputs_per_unit: int = 1
    block: int = 1

    def parameters(self, in_units: int, out_units: int) -> int:
        return in_units * self.inputs_per_unit * out_units * self.weights_per_pair + out_units


def chain_parameters(layers: Sequence[LayerShape], widths: Sequence[int]) -> int:
    """Weights and biases of the chain when its hidden layers have ``widths`` units."""
    if len(widths) != len(layers) - 1:
        raise ValueError(f"{len(layers)} layers have {len(layers) - 1} hidden widths, not {len(widths)}")
    total, in_units = 0, layers[0].in_units
    for layer, out_units in zip(layers, [*widths, layers[-1].out_units], strict=True):
        total += layer.parameters(in_units, out_units)
        in_units = out_units
    return total


def aligned_width(width: int, keep: float, block: int) -> int:
    """``width * keep`` units, as a multiple of ``block`` when the layer is at least a block wide.

    Blocks are what CPU kernels vectorize over: ONNX Runtime runs a convolution in its fast blocked
    (NCHWc) layout only when the channels are a multiple of the SIMD width (16 floats with
    AVX-512, 8 with AVX2). Measured here: 16 -> 11 and 32 -> 22 channels made the CNN slower.
    """
    if keep >= 1.0:
        return width
    if width < block:
        return max(1, round(width * keep))
    return min(width, max(block, block * round(width * keep / block)))


def pruned_widths(layers: Sequence[LayerShape], fraction: float) -> list[int]:
    """Hidden widths, one keep ratio for every layer (then aligned to its block), whose parameters
    come closest to removing ``fraction`` of the chain's (the inputs and the classes stay)."""
    widths = [layer.out_units for layer in layers[:-1]]
    target = (1.0 - fraction) * chain_parameters(layers, widths)
    widest = max(widths)
    best: list[int] = widths
    best_gap = math.inf
    for kept in range(1, widest + 1):  # the widest layer's kept units fix the ratio
        keep = kept / widest
        candidate = [aligned_width(width, keep, layer.block) for width, layer in zip(widths, layers, strict=False)]
        gap = abs(chain_parameters(layers, candidate) - target)
        if gap < best_gap:
            best, best_gap = candidate, gap
    return best


def choose_int8(fp32: Latency, candidates: Mapping[str, Latency]) -> str:
    """The int8 kind with the lowest p50 relative to fp32 (geometric mean of both batches).

    p50 by the shared harness (``shared.onnx``): the clock and statistics the evaluator's
    compressed-model rule judges the shipped kind by.
    """
    if not candidates:
        raise ValueError("no int8 candidate to choose from")

    def score(kind: str) -> float:
        batch1, batch64 = candidates[kind].p50_ratios(fp32)
        return math.sqrt(batch1 * batch64)

    return min(sorted(candidates), key=score)


@dataclass(frozen=True)
class ModelFacts:
    """What compression is judged on, for one model file."""

    val_accuracy: float
    parameters: int
    size_bytes: int
    latency: Latency

    def metrics(self, prefix: str) -> dict[str, float]:
        """These facts as metrics named ``{prefix}val_accuracy``, ``{prefix}latency_b1_p50_ms``, ..."""
        return {
            f"{prefix}val_accuracy": self.val_accuracy,
            f"{prefix}parameters": float(self.parameters),
            f"{prefix}size_bytes": float(self.size_bytes),
            **self.latency.metrics(prefix),
        }


def compression_ratios(shipped: ModelFacts, uncompressed: ModelFacts) -> dict[str, float]:
    """Shipped / uncompressed (below 1 is smaller or faster, at p50) and the accuracy given up."""
    batch1, batch64 = shipped.latency.p50_ratios(uncompressed.latency)
    return {
        "parameter_ratio": shipped.parameters / max(uncompressed.parameters, 1),
        "size_ratio": shipped.size_bytes / max(uncompressed.size_bytes, 1),
        "latency_ratio_b1": batch1,
        "latency_ratio_b64": batch64,
        "val_accuracy_drop": uncompressed.val_accuracy - shipped.val_accuracy,
    }


def check_accuracy(shipped: ModelFacts, reference: ModelFacts, reference_name: str, limit: float) -> None:
    """Raise CompressionTooLossy when the shipped model gave up more validation accuracy than allowed."""
    if reference.val_accuracy - shipped.val_accuracy > limit + 1e-9:
        raise CompressionTooLossy(shipped.val_accuracy, reference.val_accuracy, reference_name, limit)
