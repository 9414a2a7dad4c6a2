"""Installed recipes, found only through the entry points of ``ferry.recipes``: look one up, list them all,
build a recipe's network for a plan.

A name from a request is checked against the name pattern before anything is looked up, and it is only
ever compared with entry-point names: nothing in an event is imported, opened or run.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from torch import nn

from services.trainer.domain import BUILT_IN_ARCHS, TrainingPlan
from services.trainer.recipe import (
    RECIPE_GROUP,
    DatasetSpec,
    OptionValue,
    Recipe,
    RecipeRefused,
    UnknownRecipe,
    resolve_options,
)
from shared.events import ARCH_PATTERN

BUILT_IN_PACKAGE = "ferry (built in)"
BUILT_IN_DESCRIPTIONS = {
    "mlp": "dense layers of --hidden-sizes, for any tabular dataset",
    "cnn": "two 3x3 convolutions and dense layers of --hidden-sizes, for image-shaped rows (sklearn:digits)",
}


@dataclass(frozen=True)
class RecipeListing:
    """One line of ``ferry recipes``: a recipe, the package that ships it, and what is wrong with it, if anything."""

    name: str
    package: str
    description: str
    defaults: dict[str, OptionValue] = field(default_factory=dict)
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_recipe(name: str) -> Recipe:
    """The installed recipe of this entry-point name; UnknownRecipe when there is none (or it is broken)."""
    if not re.fullmatch(ARCH_PATTERN, name):
        raise UnknownRecipe(f"{name[:60]!r} is not a recipe name (lowercase letters, digits and _, at most 40)")
    if name in BUILT_IN_ARCHS:
        raise UnknownRecipe(f"{name!r} is Ferry's built-in network, not a recipe")
    found = list(entry_points(group=RECIPE_GROUP, name=name))
    if not found:
        installed = sorted({entry.name for entry in entry_points(group=RECIPE_GROUP)} - set(BUILT_IN_ARCHS))
        known = ", ".join([*BUILT_IN_ARCHS, *installed])
        raise UnknownRecipe(f"no recipe {name!r} is installed on this trainer (it knows {known}; see `ferry recipes`)")
    if len(found) > 1:
        packages = ", ".join(sorted(_package(entry) for entry in found))
        raise UnknownRecipe(f"recipe {name!r} is installed by more than one package ({packages}); keep one")
    return _load(found[0])


def _load(entry: EntryPoint) -> Recipe:
    try:
        loaded = entry.load()
    except Exception as error:  # noqa: BLE001 - a recipe package's import can fail in any way; the request ends
        raise UnknownRecipe(
            f"recipe {entry.name!r} ({_package(entry)}) cannot be loaded: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(loaded, Recipe):
        raise UnknownRecipe(
            f"recipe {entry.name!r} ({_package(entry)}) names a {type(loaded).__name__}, "
            "not a services.trainer.recipe.Recipe"
        )
    return loaded


def _package(entry: EntryPoint) -> str:
    distribution = entry.dist
    return f"{distribution.name} {distribution.version}" if distribution is not None else entry.value


def installed_recipes() -> list[RecipeListing]:
    """Ferry's built-in networks, then every entry point of ``ferry.recipes`` by name, loaded to describe it."""
    listings = [RecipeListing(name, BUILT_IN_PACKAGE, BUILT_IN_DESCRIPTIONS[name]) for name in BUILT_IN_ARCHS]
    entries = sorted(entry_points(group=RECIPE_GROUP), key=lambda entry: (entry.name, _package(entry)))
    counts = Counter(entry.name for entry in entries)
    for entry in entries:
        problem = None
        if entry.name in BUILT_IN_ARCHS:
            problem = "shadowed by Ferry's built-in network of the same name"
        elif not re.fullmatch(ARCH_PATTERN, entry.name):
            problem = "not a valid recipe name (lowercase letters, digits and _): no request can name it"
        elif counts[entry.name] > 1:
            problem = "installed by more than one package: requests naming it are refused"
        try:
            recipe = _load(entry)
        except UnknownRecipe as error:
            listings.append(RecipeListing(entry.name, _package(entry), "", problem=problem or str(error)))
            continue
        listings.append(RecipeListing(entry.name, _package(entry), recipe.description, dict(recipe.defaults), problem))
    return listings


def dataset_spec(plan: TrainingPlan) -> DatasetSpec:
    """What the plan tells a recipe about its dataset."""
    return DatasetSpec(plan.dataset, plan.num_features, plan.num_classes, plan.image_shape, plan.vocabulary_size)


def recipe_network(plan: TrainingPlan) -> nn.Module:
    """The recipe's fresh network for the plan; RecipeRefused when it cannot build one with these options."""
    recipe = find_recipe(plan.arch)
    options = resolve_options(plan.arch, recipe.defaults, plan.hyperparameters.options)
    try:
        network = recipe.build(dataset_spec(plan), options)
    except Exception as error:  # noqa: BLE001 - the recipe's own code: any failure is this request's, not ours
        raise RecipeRefused(
            f"recipe {plan.arch!r} cannot build with {options}: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(network, nn.Module):
        raise RecipeRefused(f"recipe {plan.arch!r} built a {type(network).__name__}, not a torch.nn.Module")
    return network
