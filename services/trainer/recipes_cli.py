"""``ferry recipes`` (what this trainer can build: Ferry's networks and every installed recipe) and the
``--option KEY=VALUE`` arguments of ``ferry train``, which become a recipe's options."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from shared.ops_common import Table, add_json_flag, emit
from shared.settings import FerrySettings

if TYPE_CHECKING:  # a type only: `ferry --help` need not import the trainer's domain (numpy and more)
    from services.trainer.recipe import OptionValue


def add_recipes_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``recipes`` command to the ``ferry`` parser's subparsers."""
    parser = subparsers.add_parser(
        "recipes", help="list the networks a trainer here can build: mlp, cnn and every installed recipe"
    )
    add_json_flag(parser)
    return parser


def run_recipes(args: argparse.Namespace, settings: FerrySettings | None = None) -> int:
    """Print the recipes as a table (or JSON); 1 when one of them is broken, else 0."""
    from services.trainer.adapters.recipes import installed_recipes  # here: loading recipes imports torch

    listings = installed_recipes()
    rows = [(item.name, item.package, item.problem or item.description, _shown(item.defaults)) for item in listings]
    columns = ("name", "package", "description (or what is wrong)", "options and defaults")
    records = [item.as_dict() for item in listings]
    emit(Table("recipes: ferry train --arch NAME [--option KEY=VALUE]", columns, rows, records), as_json=args.json)
    return 1 if any(item.problem for item in listings) else 0


def _shown(defaults: dict[str, OptionValue]) -> str:
    return " ".join(f"{key}={value}" for key, value in defaults.items()) or "-"


def add_arch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--arch NAME`` (or ``--recipe NAME``) and ``--option KEY=VALUE``, repeatable: a recipe's own options."""
    parser.add_argument(
        "--arch",
        "--recipe",
        dest="arch",
        default="mlp",
        help="mlp, cnn, or the name of an installed recipe (see `ferry recipes`)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe's own hyper-parameter, e.g. --option hidden_size=32 (repeat it; `ferry recipes` lists them)",
    )


def parse_options(pairs: list[str]) -> dict[str, OptionValue]:
    """``["hidden_size=32", "dropout=0.1"]`` as typed values (int, else float, else the string)."""
    options: dict[str, OptionValue] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--option takes KEY=VALUE, got {pair!r}")
        options[key.strip()] = _typed(text.strip())
    return options


def _typed(text: str) -> OptionValue:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
