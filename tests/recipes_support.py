"""Recipes made discoverable to a test exactly as an installed package is: a ``*.dist-info`` folder with
``entry_points.txt`` on the path, so no test depends on ``pip install -e examples/recipes`` having run.

Also a few broken recipes, for the refusals.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch
from torch import nn

from services.trainer.recipe import DatasetSpec, OptionValue, Recipe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "recipes"
GROUP = "ferry.recipes"


def example_entry_points() -> dict[str, str]:
    """The example package's entry points, read from its own pyproject.toml (the one source)."""
    project = tomllib.loads((EXAMPLES / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][GROUP])


def write_distribution(folder: Path, name: str, recipes: dict[str, str], version: str = "0.1.0") -> Path:
    """A minimal installed distribution ``name`` whose entry points of ``ferry.recipes`` are ``recipes``."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{recipe} = {target}\n" for recipe, target in recipes.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")
    return folder


def write_examples(folder: Path) -> Path:
    """The example package's distribution metadata, as ``pip install -e examples/recipes`` would leave it."""
    return write_distribution(folder, "ferry-example-recipes", example_entry_points())


class _Flat(nn.Module):
    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, :1]  # one logit, whatever the number of classes


class _Pairs(nn.Module):
    """Fine in torch at any batch size, but its reshape traces the batch as the constant 2."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.linear(rows).reshape(int(rows.shape[0]), -1)


class _Batchwise(nn.Module):
    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.view(2, rows.shape[1])  # only a batch of 2 has the shape it wants


def _refuses(spec: DatasetSpec, options: dict[str, OptionValue]) -> nn.Module:
    raise RuntimeError("this recipe never builds")


wrong_shape = Recipe(description="one logit for any number of classes", build=lambda spec, options: _Flat())
traced_batch = Recipe(
    description="exports with a constant batch", build=lambda spec, options: _Pairs(spec.num_features, spec.num_classes)
)
batch_of_two = Recipe(description="works only for 2 rows", build=lambda spec, options: _Batchwise())
never_builds = Recipe(description="raises while building", build=_refuses)
not_a_module = Recipe(description="builds a string", build=lambda spec, options: "network")  # type: ignore[arg-type,return-value]
not_a_recipe = {"description": "a dict is no Recipe"}
