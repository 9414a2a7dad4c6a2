"""Recipes: found only by entry-point name, refused with a reason when wrong, and the two examples trained,
exported, verified and run the way the gateway runs a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from recipes_support import EXAMPLES, write_distribution, write_examples

from services.gateway.adapters.onnx_runtime import OnnxLoader
from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.recipes import find_recipe, installed_recipes
from services.trainer.adapters.teachers import StaticTeachers
from services.trainer.domain import InvalidRequest, accuracy, plan_training
from services.trainer.handlers import TrainerDeps, handle_training_requested
from services.trainer.recipe import Recipe, RecipeRefused, UnknownRecipe, resolve_options
from services.trainer.service import JobLimits, load_split, run_training
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset
from shared.events import Compression, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus
from shared.kafka import ListPublisher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = Hyperparameters(epochs=3, learning_rate=3e-3, batch_size=64)
BROKEN = {
    "wrong_shape": "recipes_support:wrong_shape",
    "never_builds": "recipes_support:never_builds",
    "not_a_module": "recipes_support:not_a_module",
    "not_a_recipe": "recipes_support:not_a_recipe",
    "traced_batch": "recipes_support:traced_batch",
    "batch_of_two": "recipes_support:batch_of_two",
    "missing_module": "no_such_recipe_package.recipes:gone",
    "mlp": "recipes_support:wrong_shape",  # shadowed by the built-in
    "Gru": "recipes_support:wrong_shape",  # no request can name it
}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding the examples' distribution metadata, as pip leaves an installed package."""
    folder = write_examples(tmp_path / "site")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def broken(site: Path) -> Path:
    """Beside the examples, a package of broken recipes (from tests/recipes_support.py)."""
    return write_distribution(site, "ferry-broken-recipes", BROKEN)


def _deps(root: Path, publisher: ListPublisher) -> TrainerDeps:
    return TrainerDeps(
        store=ArtifactStore(str(root / "artifacts")),
        publish=publisher.publish,
        teachers=StaticTeachers(),
        completed=CompletedRequests(str(root / "artifacts")),
        work_root=root / "work",
        limits=JobLimits(budget_s=120, max_world_size=2),
    )


def _train(root: Path, **fields: object) -> ListPublisher:
    values: dict[str, object] = {"model_name": "digits", "dataset": "sklearn:digits", "hyperparameters": TINY}
    publisher = ListPublisher()
    request = TrainingRequested(**(values | fields))  # type: ignore[arg-type]
    handle_training_requested(request, None, deps=_deps(root, publisher))
    return publisher


def _failure(publisher: ListPublisher) -> str:
    statuses = publisher.of_type(TrainingStatus)
    assert [statuses[0].state, statuses[-1].state] == ["started", "failed"]
    assert publisher.of_type(ModelTrained) == []
    return statuses[-1].reason or ""


# --- options ---------------------------------------------------------------------------------------


def test_options_override_the_defaults_and_an_int_may_stand_for_a_float() -> None:
    defaults = {"hidden_size": 64, "dropout": 0.1, "cell": "gru"}
    assert resolve_options("r", defaults, {}) == defaults
    resolved = resolve_options("r", defaults, {"hidden_size": 8, "dropout": 0})
    assert resolved == {"hidden_size": 8, "dropout": 0.0, "cell": "gru"} and isinstance(resolved["dropout"], float)


def test_an_unknown_option_is_refused_naming_the_ones_the_recipe_takes() -> None:
    with pytest.raises(RecipeRefused, match="recipe 'r' has no option 'width'; it takes dropout, hidden_size"):
        resolve_options("r", {"hidden_size": 64, "dropout": 0.1}, {"width": 3})
    with pytest.raises(RecipeRefused, match="it takes no options"):
        resolve_options("r", {}, {"width": 3})


@pytest.mark.parametrize(
    ("key", "value", "wanted"),
    [
        ("hidden_size", 1.5, "int"),
        ("hidden_size", "big", "int"),
        ("hidden_size", True, "int"),
        ("dropout", "x", "float"),
    ],
)
def test_an_option_of_the_wrong_type_is_refused(key: str, value: object, wanted: str) -> None:
    with pytest.raises(RecipeRefused, match=f"option '{key}' must be a {wanted}"):
        resolve_options("r", {"hidden_size": 64, "dropout": 0.1}, {key: value})  # type: ignore[dict-item]


# --- the event ---------------------------------------------------------------------------------------


def test_an_event_from_before_recipes_still_parses() -> None:
    old = '{"model_name": "m", "dataset": "sklearn:iris", "arch": "cnn", "hyperparameters": {"epochs": 3}}'
    event = TrainingRequested.model_validate_json(old)
    assert (event.arch, event.hyperparameters.options) == ("cnn", {})


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"arch": "../evil"}, "arch"),
        ({"arch": "ferry_example_recipes.gru:gru"}, "arch"),
        ({"arch": "a" * 41}, "arch"),
        ({"hyperparameters": {"options": {"Not-A-Name": 1}}}, "hyperparameters.options"),
        ({"hyperparameters": {"options": {f"o{i}": i for i in range(33)}}}, "hyperparameters.options"),
        ({"hyperparameters": {"options": {"size": [1, 2]}}}, "hyperparameters.options.size"),
    ],
)
def test_an_event_naming_a_recipe_by_anything_but_a_short_name_is_invalid(
    fields: dict[str, object], where: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        TrainingRequested.model_validate({"model_name": "m", "dataset": "sklearn:iris", **fields})
    assert any(".".join(map(str, error["loc"])).startswith(where) for error in raised.value.errors())


# --- lookup ------------------------------------------------------------------------------------------


def test_a_recipe_is_found_by_its_entry_point_name(site: Path) -> None:
    recipe = find_recipe("gru")
    assert isinstance(recipe, Recipe) and "GRU" in recipe.description and recipe.defaults["hidden_size"] == 64


def test_an_unknown_recipe_is_refused_naming_the_installed_ones(site: Path) -> None:
    with pytest.raises(UnknownRecipe, match=r"no recipe 'lstm' is installed .*mlp, cnn, gru, transformer"):
        find_recipe("lstm")


def test_a_name_is_checked_before_it_is_looked_up(broken: Path) -> None:
    with pytest.raises(UnknownRecipe, match="'Gru' is not a recipe name"):
        find_recipe("Gru")  # an entry point of that name is installed: it is never reached
    with pytest.raises(UnknownRecipe, match="not a recipe name"):
        find_recipe("recipes_support:wrong_shape")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing_module", "cannot be loaded: ModuleNotFoundError"),
        ("not_a_recipe", "names a dict, not a services.trainer.recipe.Recipe"),
        ("mlp", "is Ferry's built-in network, not a recipe"),
    ],
)
def test_a_broken_or_shadowed_recipe_is_refused_with_its_reason(broken: Path, name: str, reason: str) -> None:
    with pytest.raises(UnknownRecipe, match=reason):
        find_recipe(name)


def test_a_recipe_two_packages_install_is_refused(site: Path) -> None:
    write_distribution(site, "ferry-other-recipes", {"gru": "recipes_support:wrong_shape"})
    with pytest.raises(UnknownRecipe, match=r"more than one package \(ferry-example-recipes 0.1.0, ferry-other"):
        find_recipe("gru")


def test_the_listing_shows_each_recipe_its_package_and_what_is_wrong(broken: Path) -> None:
    listed = {(item.name, item.package): item for item in installed_recipes()}
    assert listed["gru", "ferry-example-recipes 0.1.0"].problem is None
    assert listed["transformer", "ferry-example-recipes 0.1.0"].defaults["heads"] == 4
    assert listed["mlp", "ferry (built in)"].problem is None
    assert "shadowed" in (listed["mlp", "ferry-broken-recipes 0.1.0"].problem or "")
    assert "no request can name it" in (listed["Gru", "ferry-broken-recipes 0.1.0"].problem or "")
    assert "ModuleNotFoundError" in (listed["missing_module", "ferry-broken-recipes 0.1.0"].problem or "")
    assert listed["wrong_shape", "ferry-broken-recipes 0.1.0"].problem is None  # found out when it builds


def test_plan_refuses_pruning_a_recipe_and_options_for_a_built_in() -> None:
    digits = load_dataset("sklearn:digits")
    pruned = TrainingRequested(model_name="m", dataset="sklearn:digits", arch="gru", compression=Compression(prune=0.5))
    with pytest.raises(InvalidRequest, match="recipe 'gru' cannot be pruned"):
        plan_training(pruned, digits, budget_s=60, max_world_size=1)
    options = TrainingRequested(
        model_name="m", dataset="sklearn:digits", hyperparameters=Hyperparameters(options={"hidden_size": 3})
    )
    with pytest.raises(InvalidRequest, match="mlp takes hidden_sizes instead"):
        plan_training(options, digits, budget_s=60, max_world_size=1)


# --- through the trainer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"arch": "lstm"}, "no recipe 'lstm' is installed"),
        ({"arch": "missing_module"}, "cannot be loaded: ModuleNotFoundError"),
        (
            {"arch": "wrong_shape"},
            "network of recipe 'wrong_shape' maps 1 row(s) to (1, 1); it must give logits (1, 10)",
        ),
        ({"arch": "batch_of_two"}, "fails on 1 row(s) of 64 features: RuntimeError"),
        ({"arch": "traced_batch"}, "for one row, torch (1, 10): its batch axis is not dynamic"),
        ({"arch": "never_builds"}, "cannot build with {}: RuntimeError: this recipe never builds"),
        ({"arch": "not_a_module"}, "built a str, not a torch.nn.Module"),
        ({"arch": "gru", "hyperparameters": Hyperparameters(options={"width": 3})}, "has no option 'width'"),
        ({"arch": "gru", "hyperparameters": Hyperparameters(options={"steps": 7})}, "cannot be cut into 7"),
        (
            {"arch": "transformer", "hyperparameters": Hyperparameters(options={"d_model": 30})},
            "d_model 30 must be a multiple of heads 4",
        ),
        ({"arch": "gru", "compression": Compression(prune=0.5)}, "cannot be pruned"),
    ],
)
def test_a_bad_recipe_request_fails_with_its_reason_and_trains_nothing(
    broken: Path, tmp_path: Path, fields: dict[str, object], reason: str
) -> None:
    assert reason in _failure(_train(tmp_path, **fields))


@pytest.mark.parametrize("recipe", ["gru", "transformer"])
def test_an_example_recipe_trains_exports_verifies_and_serves(site: Path, tmp_path: Path, recipe: str) -> None:
    options = {"hidden_size": 32} if recipe == "gru" else {"d_model": 16, "heads": 2}
    publisher = _train(tmp_path, arch=recipe, hyperparameters=TINY.model_copy(update={"options": options}))
    [trained] = publisher.of_type(ModelTrained)
    progress = [status.epoch for status in publisher.of_type(TrainingStatus) if status.state == "progress"]
    assert progress == [1, 2, 3]  # Ferry's loop, epoch by epoch
    assert (trained.arch, trained.hyperparameters.options) == (recipe, options)  # what the registry records
    assert trained.signature.inputs[0].shape == [-1, 64] and trained.signature.outputs[0].shape == [-1, 10]
    # Served as the gateway serves it: the stored artifact through its loader (signature check, warm-up at
    # batch 1 and 64), then one row and the whole held-out test split.
    store = ArtifactStore(str(tmp_path / "artifacts"))
    artifact = store.fetch(trained.artifact.sha256, size_bytes=trained.artifact.size_bytes)
    model = OnnxLoader(device="cpu").load(artifact, trained.signature, warmup_batches=(1, 64))
    test = load_split(TrainingRequested(model_name="digits", dataset="sklearn:digits")).test
    [one] = model.run({"input": test.features[:1]})
    assert one.shape == (1, 10) and np.isclose(one.sum(), 1.0, atol=1e-5)
    [probabilities] = model.run({"input": test.features})
    assert accuracy(probabilities, test.labels) > 0.3  # chance is 0.1; three epochs reach 0.6-0.85


@pytest.mark.slow
def test_a_recipe_trains_on_two_ranks_and_the_parent_rebuilds_exports_and_verifies_it(
    site: Path, tmp_path: Path
) -> None:
    hyper = Hyperparameters(epochs=2, learning_rate=1e-2, options={"hidden_size": 8})
    request = TrainingRequested(
        model_name="iris", dataset="sklearn:iris", arch="gru", world_size=2, hyperparameters=hyper
    )
    # The ranks are spawned processes: they find the recipe through the same entry points, on the same path.
    trained = run_training(request, workdir=tmp_path, limits=JobLimits(budget_s=300, max_world_size=2))
    assert trained.metrics["epochs_run"] == 2
    assert trained.signature.inputs[0].shape == [-1, 4] and trained.signature.outputs[0].shape == [-1, 3]
