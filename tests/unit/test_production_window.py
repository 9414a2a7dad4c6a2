"""A production window as a dataset: its deterministic name, its csv under the datasets root, the joined dataset
and its split (each component cut by the one rule), and the window read back from logged answers and feedback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shared.datasets import DatasetError, load_dataset, split
from shared.events import FeedbackItem, InferenceFeedback, InferenceLogged, LoggedTensor
from shared.production_names import WindowNameError, original_of, parts_of, window_file, with_window
from shared.production_window import LabelledRow, load_with_window, window_csv, write_window
from shared.window_reader import join_window, labelled_row

DIGITS = [str(digit) for digit in range(10)]


def inverted_rows(count: int, *, seed: int = 3) -> list[LabelledRow]:
    """Digits with inverted intensities, labelled with their class names."""
    digits = load_dataset("sklearn:digits")
    rows = np.random.default_rng(seed).choice(len(digits.labels), count, replace=False)
    return [LabelledRow(tuple(16.0 - digits.features[row]), str(digits.labels[row])) for row in rows]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets"
    folder.mkdir()
    return folder


def test_a_window_is_named_by_model_and_alert_and_joins_the_original_not_an_earlier_window() -> None:
    window = window_file("digits", "1f2e/../x")
    assert window == "production/digits-1f2e_.._x.csv"  # the alert id cannot make a path of its own
    joined = with_window("sklearn:digits", window)
    assert joined == "sklearn:digits+window:production/digits-1f2e_.._x.csv"
    assert parts_of(joined) == ("sklearn:digits", window)
    again = with_window(joined, window_file("digits", "next"))
    assert again == "sklearn:digits+window:production/digits-next.csv"  # replaced, not stacked
    assert original_of(again) == "sklearn:digits"


@pytest.mark.parametrize(
    "name", ["sklearn:digits+window:../etc/passwd.csv", "sklearn:digits+window:/abs.csv", "+window:production/a.csv"]
)
def test_a_window_part_that_is_not_a_production_file_is_refused(name: str, root: Path) -> None:
    with pytest.raises(WindowNameError):
        parts_of(name)
    with pytest.raises(DatasetError, match="ORIGINAL"):
        load_dataset(name, root=root)


def test_the_joined_dataset_keeps_each_parts_held_out_rows_held_out(root: Path) -> None:
    rows = inverted_rows(120)
    write_window(root, "production/digits-a1.csv", rows)
    joined = load_dataset("sklearn:digits+window:production/digits-a1.csv", root=root)
    original = load_dataset("sklearn:digits")
    assert len(joined.labels) == len(original.labels) + 120
    assert joined.class_names == original.class_names
    cut, original_cut = split(joined), split(original)
    window_cut = split(joined.components[1])
    # The original's test rows are the joined test's first rows; none of them is trained on.
    assert np.array_equal(cut.test.features[: len(original_cut.test)], original_cut.test.features)
    assert np.array_equal(cut.train.features[: len(original_cut.train)], original_cut.train.features)
    assert len(cut.test) == len(original_cut.test) + len(window_cut.test) and len(window_cut.test) > 0
    assert np.array_equal(cut.test.features[len(original_cut.test) :], window_cut.test.features)
    assert cut.split_id not in (original_cut.split_id, window_cut.split_id)
    assert split(load_dataset("sklearn:digits+window:production/digits-a1.csv", root=root)).split_id == cut.split_id


def test_a_window_row_equal_to_a_held_out_row_of_the_original_is_left_out(root: Path) -> None:
    test = split(load_dataset("sklearn:digits")).test
    replayed = [LabelledRow(tuple(float(v) for v in test.features[i]), str(test.labels[i])) for i in range(5)]
    write_window(root, "production/digits-r.csv", [*replayed, *inverted_rows(40)])
    joined = load_dataset("sklearn:digits+window:production/digits-r.csv", root=root)
    assert len(joined.components[1].labels) == 40
    write_window(root, "production/digits-s.csv", replayed * 5)
    with pytest.raises(DatasetError, match="every row of the window is a row of the original's held-out split"):
        load_dataset("sklearn:digits+window:production/digits-s.csv", root=root)


def test_the_window_csv_round_trips_its_rows_and_labels(root: Path) -> None:
    rows = [LabelledRow((0.0, 1.5), "7"), LabelledRow((2.0, 3.25), "1")]
    assert window_csv(rows).splitlines() == ["f0,f1,label", "0.0,1.5,7", "2.0,3.25,1"]
    path = write_window(root, "production/m-x.csv", rows)
    assert path == root.resolve() / "production" / "m-x.csv" and not list(path.parent.glob(".*part"))
    with pytest.raises(WindowNameError):
        write_window(root, "../outside.csv", rows)


def test_a_window_whose_label_is_not_a_class_of_the_original_is_refused_without_quoting_it(root: Path) -> None:
    rows = inverted_rows(30)
    rows[4] = LabelledRow(rows[4].features, "secret-label")
    write_window(root, "production/digits-b.csv", rows)
    with pytest.raises(DatasetError, match="line 6 has a label that is not one of the original") as refused:
        load_dataset("sklearn:digits+window:production/digits-b.csv", root=root)
    assert "secret-label" not in str(refused.value)


def test_a_window_of_another_width_or_a_regression_original_is_refused(root: Path) -> None:
    write_window(root, "production/digits-c.csv", [LabelledRow((1.0, 2.0), "3")] * 30)
    with pytest.raises(DatasetError, match="64 feature columns"):
        load_with_window("sklearn:digits+window:production/digits-c.csv", root=root)
    with pytest.raises(DatasetError, match="classification"):
        load_with_window("sklearn:diabetes+window:production/digits-c.csv", root=root)
    with pytest.raises(DatasetError, match="no file"):
        load_with_window("sklearn:digits+window:production/missing.csv", root=root)


def logged(
    request_id: str, values: list[float], *, route: str = "champion", at: datetime | None = None
) -> InferenceLogged:
    tensor = LoggedTensor(name="input", datatype="FP32", shape=[1, len(values)], data=values)
    return InferenceLogged(
        model_name="digits",
        request_id=request_id,
        version=1,
        route=route,  # type: ignore[arg-type]
        inputs=[tensor],
        outputs=[],
        at=at or datetime.now(UTC),
    )


def feedback(*items: FeedbackItem, model: str = "digits") -> InferenceFeedback:
    return InferenceFeedback(model_name=model, items=list(items))


def test_the_window_joins_logged_answers_with_their_labels_newest_kept() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    answers = [logged(f"r{index}", [float(index), 1.0], at=start + timedelta(seconds=index)) for index in range(5)]
    answers.append(logged("shadow", [9.0, 9.0], route="shadow"))
    given = [
        feedback(FeedbackItem(request_id="r0", label=3), FeedbackItem(request_id="r1", label="4")),
        feedback(FeedbackItem(request_id="r2", label=99), FeedbackItem(request_id="r3", label="nine")),  # unusable
        feedback(FeedbackItem(request_id="r4", label=5), FeedbackItem(request_id="shadow", label=1)),
        feedback(FeedbackItem(request_id="r0", label=2)),  # a later label replaces the earlier one
        feedback(FeedbackItem(request_id="r1", label=1), model="other"),  # another model's feedback
    ]
    rows = join_window(answers, given, "digits", DIGITS, max_rows=10)
    assert rows == [LabelledRow((0.0, 1.0), "2"), LabelledRow((1.0, 1.0), "4"), LabelledRow((4.0, 1.0), "5")]
    assert join_window(answers, given, "digits", DIGITS, max_rows=2) == rows[1:]


def test_only_a_whole_single_row_of_numbers_makes_a_window_row() -> None:
    label = FeedbackItem(request_id="r", label=1)
    two_rows = InferenceLogged(
        model_name="digits",
        request_id="r",
        version=1,
        route="champion",
        inputs=[LoggedTensor(name="input", datatype="FP32", shape=[2, 2], data=[1, 2, 3, 4])],
        outputs=[],
    )
    assert labelled_row(two_rows, label, DIGITS) is None
    cut = two_rows.model_copy(update={"truncated": True})
    assert labelled_row(cut, label, DIGITS) is None
    assert labelled_row(logged("r", [1.0, 2.0]), FeedbackItem(request_id="r", value=1.0), DIGITS) is None
    assert labelled_row(logged("r", [1.0, 2.0]), label, DIGITS) == LabelledRow((1.0, 2.0), "1")
