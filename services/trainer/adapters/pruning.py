"""Structured pruning in torch: whole hidden units (dense layers) and whole channels (convolutions)
are cut out of the network, so the exported graph is a smaller dense one.

The network is a chain of layers, each feeding the next (conv → conv → flatten → dense → ... →
classes). Each hidden layer keeps the units whose incoming weights have the largest L2 norm (the
filter-norm criterion of Li et al., 2017); the next layer loses the matching input columns. One
keep ratio for all layers, chosen so the chain loses the requested share of its parameters, with
widths kept to multiples of 16 channels and 8 units (what the CPU kernels vectorize over).

torch-pruning (DepGraph) does this for arbitrary graphs by tracing them; for the trainer's two
fixed chains the cut is a few slices, and a pruned checkpoint reloads from its shapes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from services.trainer.compression import LayerShape, chain_parameters, pruned_widths

Prunable = nn.Linear | nn.Conv2d
CHANNEL_BLOCK = 16  # ORT's blocked convolution: 16 channels on AVX-512 (a multiple of AVX2's 8)
UNIT_BLOCK = 8


@dataclass(frozen=True)
class PruneOutcome:
    """Widths and parameters of the chain before and after the cut."""

    widths_before: list[int]
    widths_after: list[int]
    parameters_before: int
    parameters_after: int

    @property
    def removed_fraction(self) -> float:
        return 1.0 - self.parameters_after / self.parameters_before


def prunable_chain(model: nn.Module) -> list[Prunable]:
    """The dense and convolutional layers in the order data flows through them."""
    return [module for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))]


def chain_shapes(layers: list[Prunable]) -> list[LayerShape]:
    """The chain as the pure pruning rules see it."""
    shapes = []
    previous_units = _in_units(layers[0])
    for layer in layers:
        in_columns = _in_units(layer)
        if in_columns % previous_units:
            raise ValueError(f"{layer} takes {in_columns} inputs: no multiple of the {previous_units} units before")
        area = int(layer.weight[0, 0].numel())  # kernel area; 1 for a dense layer
        block = CHANNEL_BLOCK if isinstance(layer, nn.Conv2d) else UNIT_BLOCK
        shapes.append(LayerShape(previous_units, _out_units(layer), area, in_columns // previous_units, block))
        previous_units = _out_units(layer)
    return shapes


def count_parameters(model: nn.Module) -> int:
    """Number of trainable values (weights and biases)."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def prune_units(model: nn.Module, fraction: float) -> PruneOutcome:
    """Remove the weakest units and channels so about ``fraction`` of the chain's parameters go."""
    layers = prunable_chain(model)
    shapes = chain_shapes(layers)
    before = [shape.out_units for shape in shapes[:-1]]
    after = pruned_widths(shapes, fraction)
    for index, (layer, width) in enumerate(zip(layers[:-1], after, strict=True)):
        norms = layer.weight.flatten(start_dim=1).norm(dim=1)
        kept = torch.sort(torch.topk(norms, width).indices).values  # keep the survivors' order
        _keep_outputs(layer, kept)
        _keep_inputs(layers[index + 1], kept, shapes[index + 1].inputs_per_unit)
    return PruneOutcome(before, after, chain_parameters(shapes, before), chain_parameters(shapes, after))


@torch.no_grad()
def resize_like(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give the chain's layers the shapes of a (pruned) state dict, so it can be loaded."""
    names = {module: name for name, module in model.named_modules()}
    for layer in prunable_chain(model):
        for kind in ("weight", "bias"):
            key = f"{names[layer]}.{kind}"
            if key in state and getattr(layer, kind) is not None:
                setattr(layer, kind, nn.Parameter(torch.empty_like(state[key])))
        _sync_sizes(layer)


def _keep_outputs(layer: Prunable, kept: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight[kept].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias[kept].clone())
    _sync_sizes(layer)


def _keep_inputs(layer: Prunable, kept: torch.Tensor, inputs_per_unit: int) -> None:
    # A flattened channel c is the columns c*positions .. (c+1)*positions - 1 (channel-major).
    offsets = torch.arange(inputs_per_unit, device=kept.device)
    columns = (kept[:, None] * inputs_per_unit + offsets[None, :]).flatten()
    layer.weight = nn.Parameter(layer.weight[:, columns].clone())
    _sync_sizes(layer)


def _sync_sizes(layer: Prunable) -> None:
    """Keep the layer's size attributes true to its weights (its repr and its export read them)."""
    if isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = layer.weight.shape
    else:
        layer.out_channels, layer.in_channels = layer.weight.shape[:2]


def _in_units(layer: Prunable) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _out_units(layer: Prunable) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
