"""parquet: datasets: the per-row hash split, folders of files, the column choices and every refusal."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from parquet_files import SECRET_CELL, dataset_table, write_dataset, write_files

from shared import parquet_datasets
from shared.dataset_files import DatasetError
from shared.datasets import TEST_FRACTION, VALIDATION_FRACTION, load_dataset
from shared.parquet_datasets import (
    SPLIT_SALT,
    SPLIT_VERSION,
    held_out_split,
    open_parquet,
    parts_of,
    read_part,
)
from shared.parquet_sources import parse_name, read_failure
from shared.s3 import S3Unavailable
from shared.settings import FerrySettings


def ids_of(dataset: parquet_datasets.ParquetDataset, part: parquet_datasets.PartName) -> list[int]:
    """The ids of a part's rows, from the ``row`` feature, which repeats them."""
    column = dataset.feature_columns.index("row")
    found = [features[:, column] for features, _ in read_part(dataset, part, range(len(dataset.row_groups)))]
    return [int(value) for value in np.concatenate(found)] if found else []


def documented_part(key: bytes) -> int:
    """The rule as the module's docstring states it, written out again: 0 train, 1 validation, 2 test."""
    share = int.from_bytes(hashlib.blake2b(key, digest_size=8, key=SPLIT_SALT).digest(), "little") / 2**64
    return 2 if share < TEST_FRACTION else 1 if share < TEST_FRACTION + VALIDATION_FRACTION else 0


def test_each_row_goes_where_the_documented_hash_puts_it_for_integers_and_text() -> None:
    numbers = pa.array([0, 1, -1, 2**40, 7, 123456789], type=pa.int64())
    expected = [documented_part(int(n).to_bytes(8, "little", signed=True)) for n in numbers.to_pylist()]
    assert parts_of(numbers).tolist() == expected
    words = pa.array(["a", "user-17", "ünïcode"])
    assert parts_of(words).tolist() == [documented_part(w.encode()) for w in words.to_pylist()]
    # A narrower integer type is the same key: the canonical bytes are 8 bytes whatever the column's width.
    assert parts_of(pa.array([0, 1, -1, 7], type=pa.int32())).tolist() == [expected[i] for i in (0, 1, 2, 4)]


def test_the_fractions_are_the_shared_ones() -> None:
    parts = parts_of(pa.array(np.arange(200_000)))
    shares = np.bincount(parts, minlength=3) / len(parts)
    assert shares == pytest.approx(
        [1 - TEST_FRACTION - VALIDATION_FRACTION, VALIDATION_FRACTION, TEST_FRACTION], abs=0.005
    )


def test_a_folder_of_files_is_one_dataset_and_no_row_is_in_two_parts(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data" / "nested", rows=3000, files=3)
    (tmp_path / "data" / "_SUCCESS").write_text("")  # a writer's bookkeeping is not data
    pq.write_table(dataset_table(10, start=10**6), tmp_path / "data" / ".hidden.parquet")
    dataset = open_parquet("parquet:data", root=tmp_path)
    assert dataset.num_rows == 3000 and len(dataset.files) == 3 and len(dataset.row_groups) == 6
    assert dataset.feature_columns == ("row", "x0", "x1", "x2") and dataset.class_names == ("0", "1", "2")
    parts = {part: ids_of(dataset, part) for part in ("train", "validation", "test")}  # type: ignore[misc]
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == list(range(3000))
    assert all(len(set(found)) == len(found) for found in parts.values())
    assert parts["test"] == [i for i in range(3000) if documented_part(i.to_bytes(8, "little")) == 2]


def test_the_split_id_names_the_files_and_the_columns_and_repeats(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data")
    first = open_parquet("parquet:data", root=tmp_path).split_id
    assert first.startswith(f"{SPLIT_VERSION}-") and open_parquet("parquet:data", root=tmp_path).split_id == first
    assert open_parquet("parquet:data?features=x0,x1", root=tmp_path).split_id != first
    pq.write_table(dataset_table(50, start=5000), tmp_path / "data" / "part-9.parquet")
    assert open_parquet("parquet:data", root=tmp_path).split_id != first


def test_text_labels_are_sorted_classes_and_named_columns_are_used(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", text_labels=True)
    dataset = open_parquet("parquet:d?features=x1,x0", root=tmp_path)
    assert dataset.class_names == ("class-0", "class-1", "class-2") and dataset.feature_columns == ("x1", "x0")
    features, labels = next(read_part(dataset, "train", [0]))
    assert features.shape[1] == 2 and labels.dtype == np.int64 and set(labels.tolist()) <= {0, 1, 2}


def test_a_regression_dataset_gives_float_targets(tmp_path: Path) -> None:
    write_dataset(tmp_path / "r", regression=True)
    dataset = open_parquet("parquet:r", root=tmp_path, task="regression")
    assert dataset.is_regression and dataset.num_classes == 0
    _, targets = next(read_part(dataset, "train", [0]))
    assert targets.dtype == np.float64 and np.ptp(targets) > 1


def test_the_evaluator_gets_the_first_test_rows_only_and_the_trainers_split_id(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", rows=3000)
    dataset = open_parquet("parquet:data", root=tmp_path)
    held = held_out_split("parquet:data", root=tmp_path, max_test_rows=100)
    assert held.split_id == dataset.split_id and len(held.test) == 100
    assert len(held.train) == 0 and len(held.validation) == 0 and held.dataset.class_names == dataset.class_names
    row = dataset.feature_columns.index("row")
    assert [int(v) for v in held.test.features[:, row]] == ids_of(dataset, "test")[:100]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("parquet:data?key=user", "has no key column 'user'"),
        ("parquet:data?label=target", "has no label column 'target'"),
        ("parquet:data?features=x0,nope", "has no feature column 'nope'"),
        ("parquet:data?colour=red", "options are key=COLUMN"),
        ("parquet:data?key=label", "must differ"),
        ("parquet:data?features=x0,id", "cannot be a feature"),
    ],
)
def test_a_missing_or_wrong_column_is_refused_by_its_name(tmp_path: Path, name: str, reason: str) -> None:
    write_dataset(tmp_path / "data")
    with pytest.raises(DatasetError, match=reason):
        open_parquet(name, root=tmp_path)


def test_no_reason_quotes_a_cell(tmp_path: Path) -> None:
    table = dataset_table(200).append_column("note", pa.array([SECRET_CELL] * 200))
    write_files(tmp_path / "text", [table])
    with pytest.raises(DatasetError) as refused:
        open_parquet("parquet:text", root=tmp_path)  # a text column among the default features
    assert "not numeric" in str(refused.value) and SECRET_CELL not in str(refused.value)
    labels = dataset_table(200).set_column(1, "label", pa.array([SECRET_CELL] * 200))
    write_files(tmp_path / "one", [labels])
    with pytest.raises(DatasetError) as single:
        open_parquet("parquet:one", root=tmp_path)
    assert "1 class" in str(single.value) and SECRET_CELL not in str(single.value)


def test_missing_keys_and_infinite_features_are_refused_where_they_are(tmp_path: Path) -> None:
    table = dataset_table(400)
    keys = table.column("id").to_pylist()
    keys[7] = None
    write_files(tmp_path / "k", [table.set_column(0, "id", pa.array(keys, pa.int64()))], row_group_rows=200)
    dataset = open_parquet("parquet:k", root=tmp_path)
    with pytest.raises(
        DatasetError, match=r"key column 'id' has missing values \(file 'k/part-0.parquet', row group 0\)"
    ):
        list(read_part(dataset, "train", [0, 1]))
    values = table.column("x0").to_numpy().copy()
    values[:] = np.inf
    write_files(tmp_path / "inf", [table.set_column(table.schema.get_field_index("x0"), "x0", pa.array(values))])
    with pytest.raises(DatasetError, match="missing or infinite feature values"):
        list(read_part(open_parquet("parquet:inf", root=tmp_path), "train", [0]))


def test_too_many_classes_is_refused_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_datasets, "MAX_CLASSES", 2)
    write_dataset(tmp_path / "data")
    with pytest.raises(DatasetError, match="more than 2 distinct labels.*--task regression"):
        open_parquet("parquet:data", root=tmp_path)
    write_dataset(tmp_path / "text", text_labels=True)
    with pytest.raises(DatasetError, match="not numeric; a regressor needs numbers"):
        open_parquet("parquet:text", root=tmp_path, task="regression")


@pytest.mark.parametrize(
    "location", ["../outside", "/etc", "data/../../outside", "link", "https://example.com/x.parquet", "file:///etc"]
)
def test_paths_that_leave_the_datasets_root_are_refused(tmp_path: Path, location: str) -> None:
    root = tmp_path / "root"
    write_dataset(root / "data")
    write_dataset(tmp_path / "outside")
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(DatasetError, match="refused|datasets root|s3://"):
        open_parquet(f"parquet:{location}", root=root)


def test_a_symlinked_file_inside_a_folder_that_leads_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dataset(root / "data")
    write_dataset(tmp_path / "outside")
    os.symlink(tmp_path / "outside" / "part-0.parquet", root / "data" / "part-7.parquet")
    with pytest.raises(DatasetError, match="leads out of the datasets root"):
        open_parquet("parquet:data", root=root)


@pytest.mark.parametrize(
    ("allowed", "location", "reason"),
    [
        (None, "s3://data/sets", "s3:// datasets are off"),
        ("s3://data/sets", "s3://other/sets", "outside FERRY_DATASETS_S3_ROOT"),
        ("s3://data/sets", "s3://data/setsx/a", "outside FERRY_DATASETS_S3_ROOT"),
        ("s3://data/sets", "s3://data/other", "outside FERRY_DATASETS_S3_ROOT"),
        ("s3://data/sets", "s3://evil.example.com:9000/data/sets", "valid bucket name"),
        ("s3://data/sets", "s3://key:secret@data/sets", "valid bucket name"),
        ("s3://data/sets", "s3://data/sets/../../x", "'..'"),
    ],
)
def test_s3_urls_outside_the_configured_root_are_refused_before_any_request(
    allowed: str | None, location: str, reason: str
) -> None:
    # An endpoint nothing listens on: a refusal that reached the network would fail differently.
    settings = FerrySettings(datasets_s3_root=allowed, s3_endpoint_url="http://127.0.0.1:9")
    with pytest.raises(DatasetError, match=reason):
        open_parquet(f"parquet:{location}", settings=settings)


def test_names_parse_their_column_options() -> None:
    parsed = parse_name("parquet:events/2026?key=user_id&label=clicked&features=a,b.c")
    assert (parsed.location, parsed.key_column, parsed.label_column) == ("events/2026", "user_id", "clicked")
    assert parsed.feature_columns == ("a", "b.c")
    with pytest.raises(DatasetError, match="each once"):
        parse_name("parquet:x?key=a&key=b")
    with pytest.raises(DatasetError, match="a column option names a column"):
        parse_name("parquet:x?key=a b")


def test_load_dataset_refuses_to_load_a_parquet_dataset_whole(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data")
    with pytest.raises(DatasetError, match="streamed, never loaded whole"):
        load_dataset("parquet:data", root=tmp_path)


def test_the_store_failing_to_answer_is_transient_and_a_broken_file_is_not(tmp_path: Path) -> None:
    network = OSError("When reading information for key 'x': AWS Error NETWORK_CONNECTION during HeadObject")
    assert isinstance(read_failure("parquet:s3://b/x", "the listing", network), S3Unavailable)
    missing = OSError("AWS Error NO_SUCH_KEY during GetObject operation")
    assert isinstance(read_failure("parquet:s3://b/x", "the listing", missing), DatasetError)
    assert isinstance(read_failure("parquet:x", "file 'x'", OSError("Couldn't deserialize thrift")), DatasetError)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.parquet").write_bytes(b"PAR1" + b"\x00" * 64 + (32).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(DatasetError, match="file 'broken/a.parquet' is not readable Parquet"):
        open_parquet("parquet:broken", root=tmp_path)
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "a.parquet").write_bytes(b"not parquet at all, and long enough")
    with pytest.raises(DatasetError, match="is not a Parquet file"):
        open_parquet("parquet:short", root=tmp_path)


def test_the_evaluator_reads_every_test_row_of_a_small_parquet_dataset_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.evaluator.service import DatasetSplits

    write_dataset(tmp_path / "data", rows=3000)
    monkeypatch.setenv("FERRY_DATASETS_ROOT", str(tmp_path))  # as the evaluator process is configured
    found = DatasetSplits()("parquet:data", task="classification")
    dataset = open_parquet("parquet:data")
    assert found.split_id == dataset.split_id and found.dataset.task == "classification"
    row = dataset.feature_columns.index("row")
    assert [int(v) for v in found.test.features[:, row]] == ids_of(dataset, "test")  # fewer than the cap: all
    assert len(found.dataset.features) == len(found.test)  # the evaluator's dataset holds the test rows only


def test_the_datasets_listing_names_parquet_files_with_their_shape_from_the_footer(tmp_path: Path) -> None:
    from shared.datasets_cli import datasets_table

    write_files(tmp_path / "clicks", [dataset_table(120)])
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    records = datasets_table(tmp_path).records
    assert records == [
        {
            "file": "broken.parquet",
            "dataset": "parquet:broken.parquet",
            "size_bytes": 11,
            "rows": None,
            "columns": None,
        },
        {
            "file": "clicks/part-0.parquet",
            "dataset": "parquet:clicks/part-0.parquet",
            "size_bytes": (tmp_path / "clicks" / "part-0.parquet").stat().st_size,
            "rows": 120,
            "columns": 6,
        },
    ]
