"""Reading a ``parquet:`` dataset for training without holding it: a torch ``IterableDataset`` over one part
of the split, the input statistics streamed over the train part, and the held-out rows training may look at.

The units of work are the dataset's row groups. Every reader (each DataLoader worker of each DDP rank)
orders them the same way for an epoch (a permutation seeded by the seed and the epoch) and takes every
``readers``-th one from its own offset, so no row is read twice and none is skipped. Rows are shuffled
inside a bounded buffer (``shuffle_rows``), which bounds the memory a reader holds.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from shared.dataset_files import DatasetError
from shared.datasets import Part
from shared.parquet_datasets import ParquetDataset, PartName, read_part

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class StreamRefusal:
    """A DatasetError met by a reader, sent on as data: a DataLoader worker's exception reaches the trainer as
    its traceback's text, and the reason on ``training.status`` must stay the reason alone."""

    dataset: str
    reason: str

    def raise_it(self) -> NoReturn:
        raise DatasetError(self.dataset, self.reason)


class PartStream(IterableDataset[Batch | StreamRefusal]):
    """Mini-batches (features float32, labels) of one part; a regressor's targets standardized, as a column.

    A dataset problem met while reading ends the stream with a :class:`StreamRefusal`.
    """

    def __init__(
        self,
        dataset: ParquetDataset,
        part: PartName,
        *,
        batch_rows: int,
        shuffle_rows: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        target: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.part: PartName = part
        self.batch_rows = batch_rows
        self.shuffle_rows = shuffle_rows
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.target = target
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Another order of row groups and rows (workers copy the stream when an epoch's iteration starts)."""
        self.epoch = epoch

    def units(self, worker: int = 0, workers: int = 1) -> list[int]:
        """The row groups one reader takes this epoch: every ``readers``-th of one shared permutation."""
        count = len(self.dataset.row_groups)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(count) if self.shuffle_rows else range(count)
        readers = self.world_size * workers
        return [int(unit) for unit in list(order)[self.rank * workers + worker :: readers]]

    def __iter__(self) -> Iterator[Batch | StreamRefusal]:
        try:
            yield from self._batches()
        except DatasetError as error:
            yield StreamRefusal(error.dataset, error.reason)

    def _batches(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 1])
        held: list[tuple[np.ndarray, np.ndarray]] = []
        buffered = 0
        for features, labels in read_part(self.dataset, self.part, self.units(worker, workers)):
            held.append((features, labels))
            buffered += len(labels)
            if buffered >= max(self.shuffle_rows, self.batch_rows):
                held, buffered = yield from self._drain(held, rng, keep_tail=True)
        yield from self._drain(held, rng, keep_tail=False)

    def _drain(
        self, held: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, *, keep_tail: bool
    ) -> Generator[Batch, None, tuple[list[tuple[np.ndarray, np.ndarray]], int]]:
        """Yield the buffer as batches (shuffled when asked); returns the rows kept back for the next fill."""
        if not held:
            return [], 0
        features = np.concatenate([f for f, _ in held])
        labels = np.concatenate([y for _, y in held])
        if self.shuffle_rows:
            order = rng.permutation(len(labels))
            features, labels = features[order], labels[order]
        whole = len(labels) - len(labels) % self.batch_rows if keep_tail else len(labels)
        for start in range(0, whole, self.batch_rows):
            stop = min(start + self.batch_rows, whole)
            yield torch.from_numpy(features[start:stop]), self._labels(labels[start:stop])
        tail = [(features[whole:], labels[whole:])] if whole < len(labels) else []
        return tail, len(labels) - whole

    def _labels(self, labels: np.ndarray) -> torch.Tensor:
        if self.target is None:
            return torch.from_numpy(np.ascontiguousarray(labels))
        mean, std = self.target
        return torch.from_numpy(((labels - mean) / std)[:, None].astype(np.float32))


@dataclass(frozen=True)
class InputStatistics:
    """Standardization of the inputs (and of a regressor's target) and the training rows it was computed on."""

    mean: np.ndarray
    std: np.ndarray
    target: tuple[float, float]
    rows: int


def train_statistics(dataset: ParquetDataset, max_rows: int) -> InputStatistics:
    """Mean and std of the features (and the target) over the first ``max_rows`` training rows, streamed.

    Batches merge by Chan's parallel rule in float64, so the result does not depend on the batch size.
    """
    rows, mean, m2 = 0, np.zeros(dataset.num_features), np.zeros(dataset.num_features)
    target_rows, target_mean, target_m2 = 0, np.zeros(1), np.zeros(1)
    for features, labels in read_part(dataset, "train", range(len(dataset.row_groups))):
        features, labels = features[: max_rows - rows], labels[: max_rows - rows]
        rows, mean, m2 = _merge(rows, mean, m2, features.astype(np.float64))
        if dataset.is_regression:
            target_rows, target_mean, target_m2 = _merge(target_rows, target_mean, target_m2, labels[:, None])
        if rows >= max_rows:
            break
    if rows == 0:
        raise DatasetError(dataset.name, "has no rows in its train part")
    std = np.sqrt(m2 / rows)
    std[std < 1e-8] = 1.0  # a constant column maps to 0, not NaN
    target_std = float(np.sqrt(target_m2[0] / max(target_rows, 1)))
    target = (float(target_mean[0]), target_std if target_std > 1e-8 else 1.0)
    return InputStatistics(mean.astype(np.float32), std.astype(np.float32), target, rows)


def _merge(rows: int, mean: np.ndarray, m2: np.ndarray, batch: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    count = len(batch)
    if count == 0:
        return rows, mean, m2
    batch_mean = batch.mean(axis=0)
    batch_m2 = ((batch - batch_mean) ** 2).sum(axis=0)
    total = rows + count
    delta = batch_mean - mean
    return total, mean + delta * count / total, m2 + batch_m2 + delta**2 * rows * count / total


def held_out_sample(dataset: ParquetDataset, max_rows: int) -> Part:
    """The first ``max_rows`` validation rows, in file order, in memory: what the export is verified on."""
    features, labels, taken = [], [], 0
    for batch_features, batch_labels in read_part(dataset, "validation", range(len(dataset.row_groups))):
        keep = min(len(batch_labels), max_rows - taken)
        features.append(batch_features[:keep])
        labels.append(batch_labels[:keep])
        taken += keep
        if taken >= max_rows:
            break
    if not taken:
        raise DatasetError(dataset.name, "has no rows in its validation part")
    return Part(np.concatenate(features), np.concatenate(labels))
