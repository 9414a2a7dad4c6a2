"""Named datasets and the one deterministic split."""

from __future__ import annotations

import os
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
from shared.settings import FerrySettings


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


@pytest.fixture(autouse=True)
def datasets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every csv dataset of these tests lies in tmp_path, the configured datasets root."""
    monkeypatch.setenv("FERRY_DATASETS_ROOT", str(tmp_path))
    return tmp_path


def _csv(path: Path) -> str:
    """The dataset name of a file directly under the datasets root."""
    return f"csv:{path.name}"


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _flowers(path: Path, *, label_header: str = "label") -> Path:
    names = ["setosa", "versicolor", "virginica"]
    rows = [f"{i % 7}.5,{i % 5},{names[i % 3]}" for i in range(30)]
    return _write_csv(path, f"petal,sepal,{label_header}", rows)


def test_csv_string_labels_map_to_ids_in_sorted_order(tmp_path: Path) -> None:
    dataset = load_dataset(_csv(_flowers(tmp_path / "flowers.csv")))
    assert dataset.class_names == ("setosa", "versicolor", "virginica")
    assert dataset.labels[:3].tolist() == [0, 1, 2]
    assert dataset.features.shape == (30, 2)
    assert dataset.features[1].tolist() == [1.5, 1.0]
    assert dataset.image_shape is None


def test_csv_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = [f"{i},{[2, 10, 9][i % 3]}" for i in range(30)]
    dataset = load_dataset(_csv(_write_csv(tmp_path / "n.csv", "x,label", rows)))
    assert dataset.class_names == ("2", "9", "10")
    assert dataset.labels[:3].tolist() == [0, 2, 1]


def test_csv_label_column_can_be_named(tmp_path: Path) -> None:
    path = _flowers(tmp_path / "f.csv", label_header="species")
    assert load_dataset(_csv(path), label_column="species").num_classes == 3


def test_fingerprint_is_of_content_not_of_file_name(tmp_path: Path) -> None:
    first = load_dataset(_csv(_flowers(tmp_path / "a.csv")))
    second = load_dataset(_csv(_flowers(tmp_path / "b.csv")))
    assert first.fingerprint == second.fingerprint
    changed = _flowers(tmp_path / "c.csv")
    changed.write_text(changed.read_text().replace("0.5,0,setosa", "0.25,0,setosa", 1))
    assert load_dataset(_csv(changed)).fingerprint != first.fingerprint


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("sklearn:mnist", "unknown dataset"),
        ("parquet:/x", "streamed, never loaded whole"),
        ("feather:x", "unknown dataset"),
        ("csv:", "needs a file name"),
        ("csv:nonexistent/data.csv", "no file 'nonexistent/data.csv' under the datasets root"),
    ],
)
def test_bad_names_say_what_is_wrong(name: str, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        load_dataset(name)


SECRET = "s3cr3t-content"


def test_csv_without_its_label_column_says_so_without_quoting_the_header(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "f.csv", f"petal,{SECRET},species", [f"{i},{i},a" for i in range(30)])
    with pytest.raises(DatasetError, match=r"no label column 'label' among its 3 header columns") as raised:
        load_dataset(_csv(path))
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("header", "rows", "fragment"),
    [
        ("x,label", [f"{SECRET},{i % 2}" for i in range(30)], "column 1 is not numeric on line 2"),
        ("label,x", [f"{i % 2},nan" for i in range(30)], "column 2 has a missing or infinite value on line 2"),
        ("x,label", [f"{i},{i % 2}" for i in range(MIN_ROWS - 1)], "at least 20"),
        ("x,label", [f"{i},{SECRET}" for i in range(30)], "at least 2"),
        ("x,label", [f"{i},{SECRET if i < 2 else 'a'}" for i in range(30)], "1 of its 2 classes have fewer than 3"),
        ("x,y,label", [f"1,2,{SECRET}", "1,a"] * 15, "line 3 has 2 cells"),
        ("label", [f"{i % 2}" for i in range(30)], "no feature columns"),
        ("x,y,label", [f"1,{SECRET * 20_000},a"] * 30, "not valid csv near line 2"),  # over csv's field limit
    ],
)
def test_bad_csv_content_fails_with_a_reason_that_quotes_no_content(
    tmp_path: Path, header: str, rows: list[str], fragment: str
) -> None:
    path = _write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DatasetError, match=fragment) as raised:
        load_dataset(_csv(path))
    assert SECRET not in str(raised.value)


def test_a_file_that_is_not_utf8_fails_without_quoting_it(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes(b"x,label\n" + "1,caf\u00e9\n".encode("latin-1") * 30)
    with pytest.raises(DatasetError, match="not UTF-8 text") as raised:
        load_dataset("csv:latin.csv")
    assert "caf" not in str(raised.value)


def test_empty_csv_fails(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(_csv(tmp_path / "empty.csv"))


# The datasets root: a csv: name is a path inside it, and nothing else is ever opened.


@pytest.fixture
def confined(tmp_path: Path) -> Path:
    """A datasets root with a good file inside and a good file just outside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    _flowers(root / "sub" / "flowers.csv")
    _flowers(tmp_path / "outside.csv")
    return root


def test_a_relative_name_resolves_under_the_root(confined: Path) -> None:
    assert load_dataset("csv:sub/flowers.csv", root=confined).num_classes == 3
    (confined / "alias.csv").symlink_to(confined / "sub" / "flowers.csv")  # a link that stays inside is fine
    assert load_dataset("csv:alias.csv", root=confined).num_classes == 3


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("csv:/etc/passwd", "absolute paths are refused"),
        ("csv://etc/passwd", "absolute paths are refused"),
        ("csv:file:///etc/passwd", "URLs are refused"),
        ("csv:http://127.0.0.1:1/x.csv", "URLs are refused"),
        ("csv:../outside.csv", "'..' is refused"),
        ("csv:sub/../../outside.csv", "'..' is refused"),
        ("csv:sub/..", "'..' is refused"),
        ("csv:nul\x00.csv", "needs a file name"),
    ],
)
def test_names_that_leave_the_root_are_refused(confined: Path, name: str, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment) as raised:
        load_dataset(name, root=confined)
    assert "root:" not in str(raised.value)  # /etc/passwd's first line never shows


def test_the_absolute_path_of_a_file_inside_the_root_is_refused_too(confined: Path) -> None:
    with pytest.raises(DatasetError, match="absolute paths are refused"):
        load_dataset(f"csv:{confined / 'sub' / 'flowers.csv'}", root=confined)


def test_symlinks_that_lead_out_of_the_root_are_refused(confined: Path, tmp_path: Path) -> None:
    (confined / "link.csv").symlink_to(tmp_path / "outside.csv")
    (confined / "passwd.csv").symlink_to("/etc/passwd")
    (confined / "away").symlink_to(tmp_path, target_is_directory=True)
    for name in ("csv:link.csv", "csv:passwd.csv", "csv:away/outside.csv"):
        with pytest.raises(DatasetError, match="leads out of the datasets root") as raised:
            load_dataset(name, root=confined)
        assert "root:" not in str(raised.value)


def test_a_missing_root_or_a_special_file_fails_clearly(confined: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="the datasets root .* does not exist"):
        load_dataset("csv:flowers.csv", root=tmp_path / "missing")
    os.mkfifo(confined / "pipe.csv")  # would block a reader forever
    with pytest.raises(DatasetError, match="no file 'pipe.csv'"):
        load_dataset("csv:pipe.csv", root=confined)


def test_the_default_root_is_the_home_datasets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_DATASETS_ROOT")
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    assert FerrySettings().resolved_datasets_root == (tmp_path / "home" / "datasets").absolute()
    (tmp_path / "home" / "datasets").mkdir(parents=True)
    _flowers(tmp_path / "home" / "datasets" / "flowers.csv")
    assert load_dataset("csv:flowers.csv").num_classes == 3
    with pytest.raises(DatasetError, match="no file"):
        load_dataset(f"csv:{_csv(_flowers(tmp_path / 'elsewhere.csv'))[4:]}")


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
