"""The recipe interface: a model builder that a user ships in an installed Python package.

A package names its recipes in the entry-point group ``ferry.recipes``; a training request names one by
that entry-point name (its ``arch``), never by a path or by code of its own. Ferry keeps everything around
the network: the split, standardization (a layer in front of the recipe's module), the training loop,
early stopping, DDP, the softmax, ONNX export and verification, and compression. See docs/recipes.md.

Pure: torch appears here as a type only; ``adapters/recipes.py`` finds, loads and builds recipes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.trainer.domain import InvalidRequest

if TYPE_CHECKING:
    from torch import nn

RECIPE_GROUP = "ferry.recipes"

OptionValue = int | float | str
Options = Mapping[str, OptionValue]


@dataclass(frozen=True)
class DatasetSpec:
    """What a recipe knows of the dataset: the width of a row, the classes, and the image shape of image rows.

    A text dataset has a ``vocabulary_size`` (above 0): each row is then a text's token ids, ``num_features``
    of them, as float32 (0 pads the end, 1 is an unknown token, every id is below ``vocabulary_size``); Ferry
    tokenises, in training and inside the served graph alike, and does not standardize ids.
    """

    name: str
    num_features: int
    num_classes: int
    image_shape: tuple[int, int] | None = None
    vocabulary_size: int = 0

    @property
    def is_text(self) -> bool:
        return self.vocabulary_size > 0


@dataclass(frozen=True)
class Recipe:
    """A model builder, the object an entry point of ``ferry.recipes`` names.

    ``build(spec, options)`` returns a fresh ``torch.nn.Module`` that maps standardized rows, a float32
    tensor ``(batch, spec.num_features)``, to logits ``(batch, spec.num_classes)``; it raises ``ValueError``
    with a readable reason for options it cannot build with. ``defaults`` names every option the recipe
    takes, with its default value; its type (int, float or str) is the type a request must give.
    """

    description: str
    build: Callable[[DatasetSpec, dict[str, OptionValue]], nn.Module]
    defaults: Mapping[str, OptionValue] = field(default_factory=dict)


class UnknownRecipe(InvalidRequest):
    """No installed recipe has this name (or it cannot be loaded)."""


class RecipeRefused(InvalidRequest):
    """The recipe cannot build a network with these options for this dataset."""


def resolve_options(name: str, defaults: Options, given: Options) -> dict[str, OptionValue]:
    """The recipe's defaults overridden by the request's options; raise RecipeRefused for a wrong one."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        takes = ", ".join(sorted(defaults)) or "no options"
        raise RecipeRefused(f"recipe {name!r} has no option {', '.join(map(repr, unknown))}; it takes {takes}")
    resolved = dict(defaults)
    for key, value in given.items():
        resolved[key] = _typed_like(name, key, defaults[key], value)
    return resolved


def _typed_like(name: str, key: str, default: OptionValue, value: OptionValue) -> OptionValue:
    """``value`` as the default's type: an int where an int is wanted, a float (or an int) for a float."""
    wanted = type(default)
    if isinstance(value, bool) or (wanted is float and not isinstance(value, int | float)):
        raise RecipeRefused(f"recipe {name!r}: option {key!r} must be a {wanted.__name__}, got {value!r}")
    if wanted is float:
        return float(value)
    if not isinstance(value, wanted):
        raise RecipeRefused(f"recipe {name!r}: option {key!r} must be a {wanted.__name__}, got {value!r}")
    return value
