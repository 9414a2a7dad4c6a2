"""A csv whose one column beside the label holds text loads as a text dataset, split like any other: the same
cut everywhere, stratified, each text with its own label; a csv of numbers stays tabular."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from text_support import LABELS, TOPICS, datasets_root

from shared.datasets import DatasetError, load_dataset, split
from shared.datasets_cli import add_dataset


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_the_example_topics_load_as_a_text_dataset_with_three_classes(tmp_path: Path) -> None:
    dataset = load_dataset("csv:topics.csv", root=datasets_root(tmp_path))
    assert dataset.is_text and dataset.texts is not None
    assert dataset.class_names == tuple(LABELS) and len(dataset.texts) == 300
    assert dataset.features.shape == (300, 0) and dataset.num_features == 0
    assert all(isinstance(text, str) for text in dataset.texts)


def test_the_split_is_deterministic_stratified_and_keeps_each_text_with_its_label(tmp_path: Path) -> None:
    root = datasets_root(tmp_path)
    first, second = split(load_dataset("csv:topics.csv", root=root)), split(load_dataset("csv:topics.csv", root=root))
    assert first.split_id == second.split_id
    for part in ("train", "validation", "test"):
        mine, theirs = getattr(first, part), getattr(second, part)
        assert mine.texts.tolist() == theirs.texts.tolist() and np.array_equal(mine.labels, theirs.labels)
        assert mine.inputs is mine.texts and sorted(set(mine.labels.tolist())) == [0, 1, 2]
    together = {*first.train.texts.tolist(), *first.validation.texts.tolist(), *first.test.texts.tolist()}
    assert len(first.train) + len(first.validation) + len(first.test) == 300
    dataset = first.dataset
    label_of = dict(zip(dataset.texts.tolist(), dataset.labels.tolist(), strict=False))
    assert together <= set(label_of)
    # Each text keeps its label: the example's sentences name their topic.
    for text, label in zip(first.test.texts.tolist(), first.test.labels.tolist(), strict=True):
        assert label_of[text] == label


def test_a_changed_text_changes_the_fingerprint_and_the_split_id(tmp_path: Path) -> None:
    rows = [[f"words number {index}", "ab"[index % 2]] for index in range(24)]
    write_csv(tmp_path / "a.csv", rows)
    write_csv(tmp_path / "b.csv", [["other words", rows[0][1]], *rows[1:]])
    first, second = load_dataset("csv:a.csv", root=tmp_path), load_dataset("csv:b.csv", root=tmp_path)
    assert first.fingerprint != second.fingerprint and split(first).split_id != split(second).split_id


def test_the_column_name_decides_not_the_cells(tmp_path: Path) -> None:
    write_csv(tmp_path / "n.csv", [[str(index * 0.5), "ab"[index % 2]] for index in range(24)], ("x", "label"))
    dataset = load_dataset("csv:n.csv", root=tmp_path)
    assert not dataset.is_text and dataset.features.shape == (24, 1)
    write_csv(tmp_path / "digits.csv", [["ab"[index % 2], str(index)] for index in range(24)], ("label", "text"))
    numbers = load_dataset("csv:digits.csv", root=tmp_path)  # texts that look like numbers are still texts
    assert numbers.is_text and numbers.texts is not None and numbers.texts[3] == "3"
    write_csv(tmp_path / "words.csv", [[f"word {index}", "ab"[index % 2]] for index in range(24)], ("words", "label"))
    with pytest.raises(DatasetError, match="column 1 is not numeric on line 2"):
        load_dataset("csv:words.csv", root=tmp_path)


def test_a_text_dataset_is_refused_for_regression_and_with_too_few_rows(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", [[f"text {index}", str(index)] for index in range(24)])
    with pytest.raises(DatasetError, match="text trains classifiers only"):
        load_dataset("csv:t.csv", root=tmp_path, task="regression")
    write_csv(tmp_path / "few.csv", [[f"text {index}", "ab"[index % 2]] for index in range(6)])
    with pytest.raises(DatasetError, match="has 6 rows; at least 20"):
        load_dataset("csv:few.csv", root=tmp_path)


def test_datasets_add_says_it_holds_text_and_how_to_train_on_it(tmp_path: Path) -> None:
    added = add_dataset(TOPICS, tmp_path / "root", name=None, force=False, label_column="label")
    assert "(300 rows, one text, 3 classes)" in added.summary()
    assert "ferry train --model MODEL --dataset csv:topics.csv --arch gru" in added.summary()
