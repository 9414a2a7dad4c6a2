"""The trainer's input reference: per-feature quantile bins with their training counts, bounded for wide inputs,
none for a text model; and the schema that carries it refuses what does not add up."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shared.events import MAX_REFERENCE_FEATURES, FeatureReference, InputReference, Signature, TensorSpec
from shared.input_reference import build_input_reference, chosen_features, reference_for
from shared.regression import quantile_edges


def _signature(datatype: str, shape: list[int]) -> Signature:
    return Signature(
        inputs=[TensorSpec(name="input", datatype=datatype, shape=shape)],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
    )


def test_every_feature_gets_the_regression_deciles_and_counts_that_add_up_to_the_rows() -> None:
    rows = np.random.default_rng(0).normal(size=(500, 3))
    reference = build_input_reference(rows, "input")
    assert (reference.selection, reference.rows, reference.row_size) == ("all", 500, 3)
    assert [f.index for f in reference.features] == [0, 1, 2]
    for feature in reference.features:
        assert feature.edges == quantile_edges(rows[:, feature.index])
        assert len(feature.edges) == 9 and sum(feature.counts) == 500
        assert min(feature.counts) >= 45  # deciles: about a tenth of the rows in each bin


def test_a_constant_feature_keeps_one_edge_and_all_its_rows_in_the_first_bin() -> None:
    rows = np.zeros((40, 2))
    rows[:, 1] = np.arange(40)
    [constant, _] = build_input_reference(rows, "input").features
    assert (constant.edges, constant.counts) == ([0.0], [40, 0])


def test_a_wide_input_keeps_the_most_varied_features_in_index_order() -> None:
    rng = np.random.default_rng(1)
    wide = rng.normal(size=(200, 100)) * 0.1
    loud = [97, 3, 2, *range(10, 71)]  # 64 columns made far more varied than the rest
    wide[:, loud] *= 100
    reference = build_input_reference(wide, "input")
    assert reference.selection == "variance" and reference.row_size == 100
    assert [f.index for f in reference.features] == sorted(loud)
    assert len(reference.features) == MAX_REFERENCE_FEATURES


def test_equal_variances_choose_the_lowest_indices_every_time() -> None:
    rows = np.tile(np.arange(10.0)[:, None], (1, 8))
    assert chosen_features(rows, 3) == [0, 1, 2]


def test_an_image_input_is_flattened_row_major_and_matched_to_its_signature() -> None:
    images = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 16)
    reference = reference_for(_signature("FP32", [-1, 1, 4, 4]), images)
    assert reference is not None and reference.row_size == 16 and reference.input == "input"


@pytest.mark.parametrize(
    ("datatype", "shape", "columns"),
    [("BYTES", [-1], 0), ("FP32", [-1, 5], 4), ("FP32", [-1, -1], 4)],
    ids=["text model", "shape differs", "dynamic feature axis"],
)
def test_no_reference_where_the_rows_are_not_numeric_rows_of_the_input(
    datatype: str, shape: list[int], columns: int
) -> None:
    assert reference_for(_signature(datatype, shape), np.ones((10, columns))) is None


def test_the_schema_refuses_counts_that_do_not_fit_the_edges_and_features_outside_a_row() -> None:
    with pytest.raises(ValidationError, match="2 edges make 3 bins"):
        FeatureReference(index=0, edges=[0.0, 1.0], counts=[1, 2])
    with pytest.raises(ValidationError, match="strictly ascending"):
        FeatureReference(index=0, edges=[1.0, 0.0], counts=[1, 2, 3])
    feature = FeatureReference(index=4, edges=[0.0], counts=[1, 1])
    with pytest.raises(ValidationError, match="inside a row"):
        InputReference(input="input", row_size=4, rows=2, selection="all", features=[feature])


def test_the_reference_round_trips_through_json_and_stays_small_for_a_wide_input() -> None:
    reference = build_input_reference(np.random.default_rng(2).normal(size=(1000, 784)), "input")
    text = reference.model_dump_json()
    assert InputReference.model_validate_json(text) == reference
    assert len(text) < 20_000  # 64 features of 10 bins, whatever the width of the image
