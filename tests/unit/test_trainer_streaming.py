"""The trainer on parquet: datasets: the streamed parts, the workers and ranks sharing them, the statistics, and
``run_training`` end to end (its hook), with the refusals of what streaming cannot do."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from parquet_files import dataset_table, write_dataset, write_files
from torch.utils.data import DataLoader

from services.trainer.domain import EpochReport, InvalidRequest, StreamingOptions
from services.trainer.service import JobLimits, run_training
from services.trainer.streaming import PartStream, held_out_sample, train_statistics
from shared.events import Hyperparameters, TrainingRequested
from shared.onnx import open_session, predict
from shared.parquet_datasets import ParquetDataset, open_parquet, read_part

QUICK = Hyperparameters(epochs=4, hidden_sizes=[16], learning_rate=1e-2, batch_size=64, patience=2)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A datasets root with ``data`` (3,000 rows in 3 files, 6 row groups), as FERRY_DATASETS_ROOT."""
    write_dataset(tmp_path / "data", rows=3000, files=3)
    monkeypatch.setenv("FERRY_DATASETS_ROOT", str(tmp_path))
    torch.set_num_threads(1)
    return tmp_path


def part_ids(dataset: ParquetDataset, part: str) -> list[int]:
    row = dataset.feature_columns.index("row")
    return [int(v) for f, _ in read_part(dataset, part, range(len(dataset.row_groups))) for v in f[:, row]]  # type: ignore[arg-type]


def streamed_ids(batches: object, dataset: ParquetDataset) -> list[int]:
    row = dataset.feature_columns.index("row")
    return [int(v) for features, _ in batches for v in features[:, row]]  # type: ignore[attr-defined]


def test_workers_and_ranks_share_the_row_groups_without_overlap(root: Path) -> None:
    dataset = open_parquet("parquet:data")
    for world_size, workers in [(1, 1), (2, 1), (2, 3), (3, 2)]:
        taken = [
            PartStream(dataset, "train", batch_rows=64, shuffle_rows=256, rank=rank, world_size=world_size).units(
                w, workers
            )
            for rank, w in itertools.product(range(world_size), range(workers))
        ]
        flat = [unit for units in taken for unit in units]
        assert sorted(flat) == list(range(len(dataset.row_groups))), (world_size, workers)


def test_two_dataloader_workers_give_every_train_row_once_shuffled_anew_each_epoch(root: Path) -> None:
    dataset = open_parquet("parquet:data")
    stream = PartStream(dataset, "train", batch_rows=64, shuffle_rows=300, seed=5)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    expected = sorted(part_ids(dataset, "train"))
    orders = []
    for epoch in (1, 2):
        stream.set_epoch(epoch)
        orders.append(streamed_ids(loader, dataset))
        assert sorted(orders[-1]) == expected
    assert orders[0] != orders[1] and orders[0] != expected
    sizes = [len(labels) for _, labels in stream]
    assert all(size == 64 for size in sizes[:-1]) and sum(sizes) == len(expected)


def test_two_ranks_read_disjoint_rows_that_cover_the_part(root: Path) -> None:
    dataset = open_parquet("parquet:data")
    ranks = [
        streamed_ids(PartStream(dataset, "train", batch_rows=50, shuffle_rows=100, rank=r, world_size=2), dataset)
        for r in (0, 1)
    ]
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == sorted(part_ids(dataset, "train"))


def test_the_statistics_are_the_train_parts_own_and_respect_their_cap(root: Path) -> None:
    dataset = open_parquet("parquet:data")
    train = np.concatenate([f for f, _ in read_part(dataset, "train", range(len(dataset.row_groups)))])
    whole = train_statistics(dataset, max_rows=10**9)
    assert whole.rows == len(train)
    np.testing.assert_allclose(whole.mean, train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(whole.std, train.astype(np.float64).std(axis=0), rtol=1e-4)
    capped = train_statistics(dataset, max_rows=500)
    assert capped.rows == 500
    np.testing.assert_allclose(capped.mean, train[:500].mean(axis=0), rtol=1e-5, atol=1e-6)
    sample = held_out_sample(dataset, 50)
    assert len(sample) == 50 and [int(v) for v in sample.features[:, 0]] == part_ids(dataset, "validation")[:50]


def test_a_parquet_request_trains_through_run_training_on_train_rows_only(root: Path, tmp_path: Path) -> None:
    reports: list[EpochReport] = []
    request = TrainingRequested(model_name="m", dataset="parquet:data", hyperparameters=QUICK)
    limits = JobLimits(streaming=StreamingOptions(loader_workers=0, validation_rows=200, measure_rows=300))
    trained = run_training(request, workdir=tmp_path, progress=reports.append, limits=limits)
    dataset = open_parquet("parquet:data")
    assert trained.split_id == dataset.split_id
    assert trained.metrics["train_rows"] == len(part_ids(dataset, "train"))
    assert trained.metrics["measured_validation_rows"] == 300
    assert [r.epoch for r in reports] == list(range(1, len(reports) + 1)) and 2 <= len(reports) <= 4
    assert trained.signature.labels == ["0", "1", "2"]
    # The artifact is what it says: its accuracy on the measured validation rows is the reported one.
    sample = held_out_sample(dataset, 300)
    probabilities = predict(open_session(trained.path.read_bytes()), sample.features)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == sample.labels))
    assert trained.metrics["val_accuracy"] == pytest.approx(accuracy) and accuracy > 0.8


def test_a_parquet_regressor_trains_with_a_streamed_target_scale(root: Path, tmp_path: Path) -> None:
    write_dataset(root / "numbers", rows=2000, files=2, regression=True)
    request = TrainingRequested(
        model_name="r",
        dataset="parquet:numbers",
        task="regression",
        hyperparameters=QUICK.model_copy(update={"epochs": 6}),
    )
    trained = run_training(request, workdir=tmp_path, limits=JobLimits(streaming=StreamingOptions(loader_workers=0)))
    assert trained.signature.task == "regression" and trained.signature.bin_edges
    assert trained.metrics["val_r2"] > 0.5


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"compression": {"quantize": "int8"}}, "need the data in memory"),
        ({"label_column": "x0"}, r"add \?label=x0"),
        ({"arch": "cnn"}, "image-shaped"),
        ({"dataset": "parquet:data?key=user"}, "has no key column 'user'"),
    ],
)
def test_what_streaming_cannot_do_is_an_invalid_request(root: Path, tmp_path: Path, changes: dict, reason: str) -> None:
    request = TrainingRequested.model_validate(
        {"model_name": "m", "dataset": "parquet:data", "hyperparameters": QUICK.model_dump()} | changes
    )
    with pytest.raises(InvalidRequest, match=reason):
        run_training(request, workdir=tmp_path, limits=JobLimits(streaming=StreamingOptions(loader_workers=0)))


def test_a_dataset_problem_met_by_a_dataloader_worker_ends_the_request_with_its_reason_alone(
    root: Path, tmp_path: Path
) -> None:
    table = dataset_table(1000, seed=4)
    keys = table.column("id").to_pylist()
    keys[900] = None  # in the second row group: found while training, not while describing
    write_files(root / "holes", [table.set_column(0, "id", pa.array(keys, pa.int64()))])
    request = TrainingRequested(model_name="m", dataset="parquet:holes", hyperparameters=QUICK)
    limits = JobLimits(streaming=StreamingOptions(loader_workers=1, statistics_rows=10, validation_rows=10))
    with pytest.raises(InvalidRequest) as refused:
        run_training(request, workdir=tmp_path, limits=limits)
    assert str(refused.value) == (
        "dataset 'parquet:holes': key column 'id' has missing values (file 'holes/part-0.parquet', row group 1)"
    )


@pytest.mark.slow
def test_two_ddp_ranks_stream_disjoint_shares_and_the_parent_exports_rank_0s_weights(
    root: Path, tmp_path: Path
) -> None:
    # Uneven shares: 5 row groups of the train part's files over 2 ranks, so one rank runs out first (DDP join).
    write_dataset(root / "uneven", rows=2500, files=5)
    reports: list[EpochReport] = []
    request = TrainingRequested(model_name="m", dataset="parquet:uneven", hyperparameters=QUICK, world_size=2)
    limits = JobLimits(budget_s=300, max_world_size=2, streaming=StreamingOptions(loader_workers=1))
    trained = run_training(request, workdir=tmp_path, progress=reports.append, limits=limits)
    dataset = open_parquet("parquet:uneven")
    assert trained.metrics["train_rows"] == len(part_ids(dataset, "train"))  # both shares, summed: every row once
    assert trained.split_id == dataset.split_id and [r.epoch for r in reports][:2] == [1, 2]
    assert trained.metrics["val_accuracy"] > 0.8
