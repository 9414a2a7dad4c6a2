"""``ferry recipes`` lists what a trainer here can build; ``ferry train --recipe NAME --option K=V`` names one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from recipes_support import EXAMPLES, write_distribution, write_examples

from services.trainer.cli import build_request, register
from services.trainer.recipes_cli import parse_options, run_recipes
from shared.cli import main


def _parse(*argv: str) -> tuple[argparse.Namespace, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="ferry")
    commands = register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv)), commands


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_examples(tmp_path / "site")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_train_names_a_recipe_and_its_typed_options() -> None:
    args, _ = _parse(
        *("train", "--model", "d", "--dataset", "sklearn:digits", "--recipe", "transformer"),
        *("--option", "d_model=16", "--option", "dropout=0.25", "--option", "note=x=y"),
    )
    request = build_request(args)
    assert request.arch == "transformer"
    assert request.hyperparameters.options == {"d_model": 16, "dropout": 0.25, "note": "x=y"}
    assert isinstance(request.hyperparameters.options["d_model"], int)


def test_arch_and_recipe_are_one_flag() -> None:
    args, _ = _parse("train", "--model", "d", "--dataset", "sklearn:digits", "--arch", "gru")
    assert build_request(args).arch == "gru"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("--option", "hidden_size"), "--option takes KEY=VALUE, got 'hidden_size'"),
        (("--recipe", "../gru"), "arch: String should match pattern"),
        (("--option", "Bad-Name=1"), r"options.Bad-Name.\[key\]: String should match pattern"),
    ],
)
def test_a_bad_recipe_argument_is_a_readable_error(argv: tuple[str, ...], problem: str) -> None:
    args, _ = _parse("train", "--model", "d", "--dataset", "sklearn:digits", *argv)
    with pytest.raises(ValueError, match=problem):
        build_request(args)


def test_options_are_ints_then_floats_then_strings() -> None:
    assert parse_options(["a=3", "b=3.5", "c=1e-3", "d=gru", "e="]) == {
        "a": 3,
        "b": 3.5,
        "c": 0.001,
        "d": "gru",
        "e": "",
    }


def test_ferry_recipes_lists_the_built_ins_and_the_installed_examples(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recipes", "--json"]) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert list(listed) == ["mlp", "cnn", "gru", "transformer"]
    assert listed["gru"]["package"] == "ferry-example-recipes 0.1.0" and listed["gru"]["defaults"]["hidden_size"] == 64
    assert main(["recipes"]) == 0
    table = capsys.readouterr().out
    assert "transformer" in table and "d_model=32" in table and "ferry (built in)" in table


def test_ferry_recipes_says_what_is_broken_and_exits_1(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_distribution(site, "ferry-broken-recipes", {"gone": "no_such_recipe_package:gone"})
    args, commands = _parse("recipes")
    assert commands["recipes"] is run_recipes
    assert run_recipes(args) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if "gone" in line)
    assert "ferry-broken-recipes 0.1.0" in row and "cannot be loaded: ModuleNotFoundError" in row
