"""Named datasets and the one deterministic split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.datasets import (
    MIN_ROWS,
    Dataset,
    DatasetError,
    fingerprint,
    load_dataset,
    split,
    split_id,
)


@pytest.mark.parametrize(
    ("name", "shape", "classes", "image_shape"),
    [
        ("sklearn:digits", (1797, 64), 10, (8, 8)),
        ("sklearn:breast_cancer", (569, 30), 2, None),
        ("sklearn:wine", (178, 13), 3, None),
        ("sklearn:iris", (150, 4), 3, None),
    ],
)
def test_sklearn_datasets_load_with_their_shapes(
    name: str, shape: tuple[int, int], classes: int, image_shape: tuple[int, int] | None
) -> None:
    dataset = load_dataset(name)
    assert dataset.features.shape == shape
    assert dataset.features.dtype == np.float32
    assert dataset.labels.dtype == np.int64
    assert dataset.num_classes == classes
    assert set(np.unique(dataset.labels)) == set(range(classes))
    assert dataset.image_shape == image_shape
    assert len(dataset.fingerprint) == 64


def test_dataset_arrays_are_read_only() -> None:
    dataset = load_dataset("sklearn:iris")
    with pytest.raises(ValueError):
        dataset.features[0, 0] = 1.0


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _flowers(path: Path, *, label_header: str = "label") -> Path:
    names = ["setosa", "versicolor", "virginica"]
    rows = [f"{i % 7}.5,{i % 5},{names[i % 3]}" for i in range(30)]
    return _write_csv(path, f"petal,sepal,{label_header}", rows)


def test_csv_string_labels_map_to_ids_in_sorted_order(tmp_path: Path) -> None:
    dataset = load_dataset(f"csv:{_flowers(tmp_path / 'flowers.csv')}")
    assert dataset.class_names == ("setosa", "versicolor", "virginica")
    assert dataset.labels[:3].tolist() == [0, 1, 2]
    assert dataset.features.shape == (30, 2)
    assert dataset.features[1].tolist() == [1.5, 1.0]
    assert dataset.image_shape is None


def test_csv_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = [f"{i},{[2, 10, 9][i % 3]}" for i in range(30)]
    dataset = load_dataset(f"csv:{_write_csv(tmp_path / 'n.csv', 'x,label', rows)}")
    assert dataset.class_names == ("2", "9", "10")
    assert dataset.labels[:3].tolist() == [0, 2, 1]


def test_csv_label_column_can_be_named(tmp_path: Path) -> None:
    path = _flowers(tmp_path / "f.csv", label_header="species")
    assert load_dataset(f"csv:{path}", label_column="species").num_classes == 3


def test_fingerprint_is_of_content_not_of_file_name(tmp_path: Path) -> None:
    first = load_dataset(f"csv:{_flowers(tmp_path / 'a.csv')}")
    second = load_dataset(f"csv:{_flowers(tmp_path / 'b.csv')}")
    assert first.fingerprint == second.fingerprint
    changed = _flowers(tmp_path / "c.csv")
    changed.write_text(changed.read_text().replace("0.5,0,setosa", "0.25,0,setosa", 1))
    assert load_dataset(f"csv:{changed}").fingerprint != first.fingerprint


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("sklearn:mnist", "unknown dataset"),
        ("parquet:/x", "unknown dataset"),
        ("csv:", "needs a path"),
        ("csv:/nonexistent/data.csv", "does not exist"),
    ],
)
def test_bad_names_say_what_is_wrong(name: str, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        load_dataset(name)


def test_csv_without_its_label_column_names_the_columns(tmp_path: Path) -> None:
    path = _flowers(tmp_path / "f.csv", label_header="species")
    with pytest.raises(DatasetError, match=r"no label column 'label'.*\['petal', 'sepal', 'species'\]"):
        load_dataset(f"csv:{path}")


@pytest.mark.parametrize(
    ("header", "rows", "fragment"),
    [
        ("x,label", [f"high,{i % 2}" for i in range(30)], "not numeric .*line 2: 'high'"),
        ("x,label", [f"nan,{i % 2}" for i in range(30)], "missing or infinite"),
        ("x,label", [f"{i},{i % 2}" for i in range(MIN_ROWS - 1)], "at least 20"),
        ("x,label", [f"{i},a" for i in range(30)], "at least 2"),
        ("x,label", [f"{i},{'b' if i < 2 else 'a'}" for i in range(30)], r"\['b'\] have fewer than 3"),
        ("x,y,label", ["1,2,a", "1,a"] * 15, "line 3 has 2 cells"),
        ("label", [f"{i % 2}" for i in range(30)], "no feature columns"),
    ],
)
def test_bad_csv_content_fails_with_a_reason(tmp_path: Path, header: str, rows: list[str], fragment: str) -> None:
    path = _write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DatasetError, match=fragment):
        load_dataset(f"csv:{path}")


def test_empty_csv_fails(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(f"csv:{tmp_path / 'empty.csv'}")


def test_split_is_deterministic_and_70_15_15() -> None:
    first, second = split(load_dataset("sklearn:digits")), split(load_dataset("sklearn:digits"))
    assert first.split_id == second.split_id
    assert np.array_equal(first.test.features, second.test.features)
    assert np.array_equal(first.train.labels, second.train.labels)
    total = len(first.train) + len(first.validation) + len(first.test)
    assert total == 1797
    assert abs(len(first.test) / total - 0.15) < 0.01
    assert abs(len(first.validation) / total - 0.15) < 0.01


def test_split_id_depends_on_data_and_seed() -> None:
    digits, wine = load_dataset("sklearn:digits"), load_dataset("sklearn:wine")
    assert split_id(digits) != split_id(wine)
    assert split_id(digits, seed=1) != split_id(digits)
    assert split(digits, seed=1).split_id == split_id(digits, seed=1)


def _synthetic(labels: list[int]) -> Dataset:
    label_array = np.array(labels, dtype=np.int64)
    # The row index as the feature makes every row identifiable.
    features = np.arange(len(labels), dtype=np.float32).reshape(-1, 1)
    classes = tuple(str(c) for c in range(label_array.max() + 1))
    return Dataset("synthetic", features, label_array, classes, None, fingerprint(features, label_array, classes))


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=3, max_value=60), min_size=2, max_size=6),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_split_parts_are_disjoint_cover_everything_and_hold_every_class(counts: list[int], seed: int) -> None:
    labels = [class_id for class_id, count in enumerate(counts) for _ in range(count)]
    parts = split(_synthetic(labels), seed=seed)
    rows = [set(part.features[:, 0].astype(int).tolist()) for part in (parts.train, parts.validation, parts.test)]
    assert rows[0].isdisjoint(rows[1]) and rows[0].isdisjoint(rows[2]) and rows[1].isdisjoint(rows[2])
    assert set().union(*rows) == set(range(len(labels)))
    for part in (parts.train, parts.validation, parts.test):
        assert set(part.labels.tolist()) == set(range(len(counts)))


def test_split_is_stratified() -> None:
    parts = split(load_dataset("sklearn:breast_cancer"))
    shares = [float(np.mean(part.labels)) for part in (parts.train, parts.validation, parts.test)]
    assert max(shares) - min(shares) < 0.02
