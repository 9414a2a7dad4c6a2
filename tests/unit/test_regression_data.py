"""Regression in the dataset spec and the events: sklearn:diabetes, csv --task regression, the split, the
signature's task and drift bins, old events still parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from shared.datasets import REGRESSION_GROUPS, DatasetError, load_dataset, split
from shared.events import ModelTrained, Signature, TensorSpec, TrainingRequested
from shared.regression import bin_of, bin_shares, quantile_edges

VALUE_OUTPUT = [TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])]
INPUT = [TensorSpec(name="input", datatype="FP32", shape=[-1, 10])]


def test_diabetes_is_a_regression_dataset_of_numeric_targets() -> None:
    dataset = load_dataset("sklearn:diabetes")
    assert dataset.task == "regression" and dataset.is_regression
    assert dataset.features.shape == (442, 10) and dataset.labels.dtype == np.float64
    assert dataset.class_names == () and dataset.num_classes == 0
    assert not dataset.labels.flags.writeable


def test_a_bundled_dataset_refuses_another_task() -> None:
    with pytest.raises(DatasetError, match="is a regression dataset; it cannot be used for classification"):
        load_dataset("sklearn:diabetes", task="classification")
    with pytest.raises(DatasetError, match="is a classification dataset"):
        load_dataset("sklearn:iris", task="regression")


def test_the_regression_split_is_deterministic_disjoint_and_spread_over_the_target() -> None:
    dataset = load_dataset("sklearn:diabetes")
    first, second = split(dataset), split(dataset)
    assert first.split_id == second.split_id
    assert np.array_equal(first.test.features, second.test.features)
    assert len(first.train) + len(first.validation) + len(first.test) == 442
    rows = {tuple(row) for part in (first.train, first.validation, first.test) for row in part.features.tolist()}
    assert len(rows) == 442  # no row in two parts
    # Stratified by quantile groups of the target: the test part holds rows of every group.
    edges = np.quantile(dataset.labels, np.linspace(0, 1, REGRESSION_GROUPS + 1)[1:-1])
    assert set(np.searchsorted(edges, first.test.labels).tolist()) == set(range(REGRESSION_GROUPS))


def test_classification_splits_are_the_ones_they_were_before_tasks() -> None:
    # Recorded before regression existed: the evaluator's held-out rows of a classifier must never move.
    assert split(load_dataset("sklearn:iris")).split_id == "v1-0d646354b9a73712c87096e8"


def test_a_csv_file_is_a_regression_dataset_when_asked(tmp_path: Path) -> None:
    rows = [f"{i},{i % 7},{2.5 * i + 1}" for i in range(40)]
    (tmp_path / "prices.csv").write_text("\n".join(["area,rooms,price", *rows]) + "\n")
    regression = load_dataset("csv:prices.csv", label_column="price", root=tmp_path, task="regression")
    assert regression.task == "regression" and regression.labels[:3].tolist() == [1.0, 3.5, 6.0]
    with pytest.raises(DatasetError, match="use --task regression"):  # 40 classes of one row each
        load_dataset("csv:prices.csv", label_column="price", root=tmp_path)
    rows = [f"{i},{i % 7},{i % 4}" for i in range(40)]
    (tmp_path / "grades.csv").write_text("\n".join(["area,rooms,grade", *rows]) + "\n")
    regression = load_dataset("csv:grades.csv", label_column="grade", root=tmp_path, task="regression")
    as_classes = load_dataset("csv:grades.csv", label_column="grade", root=tmp_path)
    assert as_classes.task == "classification" and as_classes.num_classes == 4
    assert regression.fingerprint != as_classes.fingerprint
    assert split(regression).split_id != split(as_classes).split_id


def test_a_csv_regression_target_must_be_numeric_and_vary(tmp_path: Path) -> None:
    (tmp_path / "words.csv").write_text("x,label\n" + "".join(f"{i},secret{i}\n" for i in range(30)))
    with pytest.raises(DatasetError) as refused:
        load_dataset("csv:words.csv", root=tmp_path, task="regression")
    assert "column 2 is not numeric on line 2" in str(refused.value) and "secret" not in str(refused.value)
    (tmp_path / "flat.csv").write_text("x,label\n" + "".join(f"{i},3\n" for i in range(30)))
    with pytest.raises(DatasetError, match="same target on every row"):
        load_dataset("csv:flat.csv", root=tmp_path, task="regression")


def test_requests_and_signatures_from_before_tasks_still_parse() -> None:
    request = TrainingRequested.model_validate({"model_name": "m", "dataset": "sklearn:iris"})
    assert request.task is None
    old = {"inputs": [i.model_dump() for i in INPUT], "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 3]}]}
    signature = Signature.model_validate(old)
    assert signature.task is None and not signature.is_regressor and signature.bin_edges is None
    with pytest.raises(ValidationError):
        TrainingRequested(model_name="m", dataset="sklearn:iris", task="ranking")  # type: ignore[arg-type]


def test_bin_edges_belong_to_a_regressor_and_ascend() -> None:
    signature = Signature(inputs=INPUT, outputs=VALUE_OUTPUT).regressor([1.0, 2.0, 5.0])
    assert signature.task == "regression" and signature.bin_edges == [1.0, 2.0, 5.0]
    with pytest.raises(ValidationError, match="belong to a regressor"):
        Signature(inputs=INPUT, outputs=VALUE_OUTPUT, bin_edges=[1.0, 2.0])
    with pytest.raises(ValidationError, match="strictly ascending"):
        Signature(inputs=INPUT, outputs=VALUE_OUTPUT, task="regression", bin_edges=[2.0, 1.0])
    trained = ModelTrained.model_json_schema()
    assert "task" in trained["$defs"]["Signature"]["properties"]


def test_quantile_edges_cut_values_into_equal_bins_and_bin_of_follows_them() -> None:
    values = np.arange(100, dtype=np.float64)
    edges = quantile_edges(values, bins=4)
    assert edges == pytest.approx([24.75, 49.5, 74.25])
    assert bin_shares(values, edges) == {"0": 0.25, "1": 0.25, "2": 0.25, "3": 0.25}
    # bin i holds edges[i-1] < v <= edges[i]: an edge itself falls in the lower bin
    assert bin_of(np.array([-1e9, 24.75, 24.76, 1e9]), edges).tolist() == [0, 0, 1, 3]
    assert quantile_edges(np.full(10, 3.0)) == [3.0]  # repeated edges merge: two bins, not ten
    assert quantile_edges(np.array([np.nan, np.inf])) == []


def test_ferry_datasets_add_checks_a_regression_file_as_the_trainer_will(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import build_parser
    from shared.ops_common import Exit
    from shared.settings import FerrySettings

    source = tmp_path / "prices.csv"
    source.write_text("area,label\n" + "".join(f"{i},{3.5 * i + 1}\n" for i in range(40)))
    root = tmp_path / "datasets"

    def ferry(*argv: str) -> int:
        parser, commands = build_parser()
        args = parser.parse_args(list(argv))
        return commands[f"{args.command}.{args.action}"](args, FerrySettings(datasets_root=root))

    assert ferry("datasets", "add", str(source)) == Exit.USAGE  # as classes: 40 classes of one row
    assert "use --task regression" in capsys.readouterr().err
    assert ferry("datasets", "add", str(source), "--task", "regression") == Exit.OK
    out = capsys.readouterr().out
    assert "(40 rows, 1 features, a numeric target)" in out
    assert "--dataset csv:prices.csv --task regression" in out
