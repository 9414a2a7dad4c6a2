"""Class names, from the dataset to the signature: sklearn's target names, a csv file's label values, the
signature that carries them (old events without them still parse), and the refusal of a missing csv file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from shared.datasets import DatasetError, load_dataset
from shared.events import MAX_LABEL_CHARS, DeploymentChanged, ModelTrained, Signature, TensorSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "data"


@pytest.mark.parametrize(
    ("name", "first", "last", "count"),
    [
        ("sklearn:iris", "setosa", "virginica", 3),
        ("sklearn:wine", "class_0", "class_2", 3),
        ("sklearn:breast_cancer", "malignant", "benign", 2),
        ("sklearn:digits", "0", "9", 10),
    ],
)
def test_sklearn_datasets_carry_their_target_names_in_label_order(name: str, first: str, last: str, count: int) -> None:
    from sklearn import datasets as sk_datasets

    dataset = load_dataset(name)
    assert dataset.class_names[0] == first and dataset.class_names[-1] == last and dataset.num_classes == count
    bunch = getattr(sk_datasets, f"load_{name.split(':')[1]}")()
    # label i is named class_names[i]: the names are sklearn's, in the order of its label ids
    assert [dataset.class_names[label] for label in dataset.labels[:5]] == [
        str(bunch.target_names[target]) for target in bunch.target[:5]
    ]


def test_the_example_csv_is_iris_with_its_species_as_labels() -> None:
    example = load_dataset("csv:iris.csv", root=EXAMPLES)
    iris = load_dataset("sklearn:iris")
    assert example.class_names == iris.class_names == ("setosa", "versicolor", "virginica")
    np.testing.assert_array_equal(example.labels, iris.labels)
    np.testing.assert_allclose(example.features, iris.features)


def test_csv_labels_are_named_in_the_same_sorted_order_as_their_ids(tmp_path: Path) -> None:
    names = ["zebra", "ant", "moth"]
    rows = [f"{i},{names[i % 3]}" for i in range(30)]
    (tmp_path / "animals.csv").write_text("\n".join(["size,label", *rows]) + "\n")
    dataset = load_dataset("csv:animals.csv", root=tmp_path)
    assert dataset.class_names == ("ant", "moth", "zebra")
    assert [dataset.class_names[label] for label in dataset.labels[:3]] == names


def test_a_class_label_too_long_for_a_signature_is_refused_without_quoting_it(tmp_path: Path) -> None:
    secret = "s" * (MAX_LABEL_CHARS + 1)
    rows = [f"{i},{secret if i % 2 else 'short'}" for i in range(30)]
    (tmp_path / "long.csv").write_text("\n".join(["x,label", *rows]) + "\n")
    with pytest.raises(DatasetError, match=f"1 of its class labels are longer than {MAX_LABEL_CHARS}") as refused:
        load_dataset("csv:long.csv", root=tmp_path)
    assert secret not in str(refused.value)


def test_a_missing_csv_names_the_configured_root_and_how_to_fill_it(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "private.csv").write_text("x,label\n")
    root = tmp_path / "datasets"
    root.symlink_to(real)  # the configured root is a link: its target's path is never shown
    with pytest.raises(DatasetError) as refused:
        load_dataset("csv:flowers.csv", root=root)
    message = str(refused.value)
    assert f"no file 'flowers.csv' under the datasets root '{root}'" in message
    assert "FERRY_DATASETS_ROOT" in message and "ferry datasets add FILE --name flowers.csv" in message
    assert str(real) not in message
    with pytest.raises(DatasetError, match="does not exist; ferry datasets add FILE creates it"):
        load_dataset("csv:flowers.csv", root=tmp_path / "missing")


def _signature(classes: int = 3, labels: list[str] | None = None) -> Signature:
    return Signature(
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, classes])],
        labels=labels,
    )


def test_labels_travel_through_model_trained_and_deployment_changed_json() -> None:
    signature = _signature().labelled(("setosa", "versicolor", "virginica"))
    event = ModelTrained.model_validate(
        {
            "model_name": "iris",
            "request_id": "r",
            "artifact": {"uri": "/a", "sha256": "0" * 64, "size_bytes": 1, "format": "onnx"},
            "signature": signature.model_dump(mode="json"),
            "dataset": "sklearn:iris",
            "split_id": "s",
            "arch": "mlp",
            "hyperparameters": {},
        }
    )
    again = ModelTrained.model_validate_json(event.model_dump_json())
    assert again.signature.labels == ["setosa", "versicolor", "virginica"] and again == event
    deployed = {"version": 1, "artifact": event.artifact.model_dump(), "signature": event.signature.model_dump()}
    changed = DeploymentChanged.model_validate({"model_name": "iris", "revision": 1, "champion": deployed})
    assert changed.champion is not None and changed.champion.signature.labels == ["setosa", "versicolor", "virginica"]


def test_a_signature_stored_before_labels_parses_without_them() -> None:
    stored = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }
    old = Signature(**stored)
    assert old.labels is None
    assert old == _signature()


@pytest.mark.parametrize(
    ("classes", "labels"),
    [(3, ["a", "b"]), (2, ["a", "b", "c"]), (3, ["a", "b", "x" * (MAX_LABEL_CHARS + 1)])],
)
def test_labels_must_name_each_class_of_the_first_output(classes: int, labels: list[str]) -> None:
    with pytest.raises(ValidationError):
        _signature(classes, labels)


def test_labels_need_an_output_and_fit_any_count_on_a_dynamic_class_axis() -> None:
    with pytest.raises(ValidationError, match="one label per class"):
        Signature(inputs=[], outputs=[], labels=["a"])
    assert _signature(-1, ["a", "b", "c", "d"]).labels == ["a", "b", "c", "d"]
