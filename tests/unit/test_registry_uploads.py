"""The checks of an external ONNX artifact (services.registry.uploads), on classifiers and regressors made by
skl2onnx and torch."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from evaluator_onnx import fitted_diabetes, linear_regressor
from external_models import sklearn_diabetes, sklearn_digits, sklearn_model, torch_network
from sklearn.linear_model import LogisticRegression, Ridge

from services.evaluator.domain.compatibility import dataset_fit, signature_difference
from services.registry.adapters.memory import MemoryDatabase
from services.registry.uploads import (
    INPUT_NAME,
    OUTPUT_NAME,
    REGRESSION_OUTPUT_NAME,
    UploadRejected,
    check_upload,
    register_upload,
    supported_opset,
)
from services.trainer import domain as trainer
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split, split_id
from shared.events import ModelTrained, Signature, TensorSpec
from shared.onnx import open_session, predict
from shared.regression import quantile_edges

LIMIT = 10 * 2**20


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("sklearn:digits")


def test_a_scikit_learn_pipeline_keeps_only_its_probabilities_and_scores_like_sklearn(digits) -> None:
    checked = check_upload(sklearn_digits(), digits, max_bytes=LIMIT)
    assert checked.rewritten
    assert [(spec.datatype, spec.shape) for spec in checked.signature.inputs] == [("FP32", [-1, 64])]
    assert [(spec.datatype, spec.shape) for spec in checked.signature.outputs] == [("FP32", [-1, 10])]
    test = split(digits).test
    probabilities = predict(open_session(checked.data), test.features)  # what the evaluator reads: output 0
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (probabilities.argmax(axis=1) == test.labels).mean() > 0.9


def test_a_torch_module_with_a_softmax_and_ferrys_names_is_stored_as_uploaded(digits) -> None:
    data = torch_network()
    checked = check_upload(data, digits, max_bytes=LIMIT)
    assert not checked.rewritten and checked.data == data


@pytest.mark.parametrize("names", [("features", "scores"), ("probabilities", "input"), ("x", "input")])
def test_other_tensor_names_become_the_trainers_and_the_outputs_stay_the_same(digits, names) -> None:
    data = torch_network(names=names)
    checked = check_upload(data, digits, max_bytes=LIMIT)
    assert checked.rewritten
    assert [spec.name for spec in checked.signature.inputs] == [INPUT_NAME]
    assert [spec.name for spec in checked.signature.outputs] == [OUTPUT_NAME]
    rows = split(digits).test.features
    assert np.array_equal(predict(open_session(checked.data), rows), predict(open_session(data), rows))


def test_what_is_stored_is_what_the_evaluator_compares_with_a_ferry_trained_champion(digits) -> None:
    champion = Signature(
        inputs=[TensorSpec(name=trainer.INPUT_NAME, datatype="FP32", shape=[-1, 64])],
        outputs=[TensorSpec(name=trainer.OUTPUT_NAME, datatype="FP32", shape=[-1, 10])],
    )
    for data in (sklearn_digits(), torch_network(names=("x", "y"))):
        stored = check_upload(data, digits, max_bytes=LIMIT).signature
        assert signature_difference(stored, champion, mine_is="upload", theirs_is="champion") is None
        assert dataset_fit(stored, 64, 10, "sklearn:digits") is None


def test_a_fixed_batch_axis_is_refused(digits) -> None:
    model = onnx.load_model_from_string(torch_network())
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(UploadRejected, match="dynamic batch axis"):
        check_upload(model.SerializeToString(), digits, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"", "empty"),
        (b"\x00\x01 this is no model at all \xff" * 10, "not an ONNX model"),
        (b"SECRET-CONTENT" * 50, "not an ONNX model"),
    ],
)
def test_what_is_not_onnx_is_refused_without_quoting_it(digits, data: bytes, named: str) -> None:
    with pytest.raises(UploadRejected) as refused:
        check_upload(data, digits, max_bytes=LIMIT)
    assert named in refused.value.reason and "SECRET" not in refused.value.reason
    assert refused.value.status == 422


def test_a_model_for_other_features_or_classes_names_the_expected_signature(digits) -> None:
    with pytest.raises(UploadRejected, match=r"input is FP32 \[-1, 30\]; expected one FP32 input \[batch, 64\]"):
        check_upload(torch_network(30, 2), digits, max_bytes=LIMIT)
    with pytest.raises(UploadRejected, match=r"outputs are FP32 \[-1, 3\]; expected one FP32 output \[batch, 10\]"):
        check_upload(torch_network(64, 3), digits, max_bytes=LIMIT)


def test_logits_are_refused(digits) -> None:
    with pytest.raises(UploadRejected, match="not class probabilities"):
        check_upload(torch_network(softmax=False), digits, max_bytes=LIMIT)


def test_too_large_is_413(digits) -> None:
    data = torch_network()
    with pytest.raises(UploadRejected) as refused:
        check_upload(data, digits, max_bytes=len(data) - 1)
    assert refused.value.status == 413


def test_an_opset_this_runtime_cannot_load_is_named(digits) -> None:
    model = onnx.load_model_from_string(torch_network())
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = supported_opset() + 1
    with pytest.raises(UploadRejected, match=f"unsupported opset {supported_opset() + 1}"):
        check_upload(model.SerializeToString(), digits, max_bytes=LIMIT)


def test_register_upload_stores_then_announces_a_model_trained_of_external_lineage(digits, tmp_path) -> None:
    store, database = ArtifactStore(str(tmp_path)), MemoryDatabase()
    answer = register_upload(
        "digits-ext",
        sklearn_digits(),
        digits,
        metrics={"accuracy": 0.96},
        max_bytes=LIMIT,
        artifacts=store,
        uow=database.uow(),
    )
    assert store.has(answer.artifact.sha256)
    [row] = database.state.outbox
    event = ModelTrained.model_validate(row.payload)
    assert (event.lineage, event.arch, event.dataset) == ("external", "external", "sklearn:digits")
    assert event.artifact == answer.artifact and event.metrics == {"accuracy": 0.96}


def test_a_refused_upload_stores_nothing(digits, tmp_path) -> None:
    store, database = ArtifactStore(str(tmp_path)), MemoryDatabase()
    with pytest.raises(UploadRejected):
        register_upload(
            "m", torch_network(softmax=False), digits, metrics={}, max_bytes=LIMIT, artifacts=store, uow=database.uow()
        )
    assert not list(tmp_path.rglob("*")) and database.state.outbox == []


def test_the_stored_names_are_the_trainers() -> None:
    assert (INPUT_NAME, OUTPUT_NAME) == (trainer.INPUT_NAME, trainer.OUTPUT_NAME)


def test_old_model_trained_events_still_parse_as_ferry_lineage() -> None:
    fields = ModelTrained.model_fields
    assert fields["lineage"].default == "ferry"


# --- regressors ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes():  # type: ignore[no-untyped-def]
    return load_dataset("sklearn:diabetes")


@pytest.mark.parametrize("regressor", ["ridge", "boosting"])
def test_a_scikit_learn_regressor_is_stored_with_the_trainers_signature_and_its_drift_bins(
    diabetes, regressor: str
) -> None:
    data = sklearn_diabetes(regressor)
    checked = check_upload(data, diabetes, max_bytes=LIMIT)
    assert checked.rewritten  # skl2onnx names its tensors X and variable
    signature = checked.signature
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.inputs] == [(INPUT_NAME, "FP32", [-1, 10])]
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.outputs] == [
        (REGRESSION_OUTPUT_NAME, "FP32", [-1, 1])
    ]
    assert signature.is_regressor and signature.labels is None
    validation = split(diabetes).validation.features
    values = predict(open_session(checked.data), validation)[:, 0]
    assert signature.bin_edges == quantile_edges(values)  # the trainer's cut: deciles of validation predictions
    test = split(diabetes).test.features
    assert np.array_equal(predict(open_session(checked.data), test), predict(open_session(data), test))


def test_a_regressors_stored_signature_is_what_the_evaluator_compares_with_a_ferry_trained_regressor(diabetes) -> None:
    champion = Signature(
        inputs=[TensorSpec(name=trainer.INPUT_NAME, datatype="FP32", shape=[-1, 10])],
        outputs=[TensorSpec(name=trainer.REGRESSION_OUTPUT_NAME, datatype="FP32", shape=[-1, 1])],
        task="regression",
    )
    for data in (sklearn_diabetes(), fitted_diabetes(flat=True), linear_regressor(np.ones(10), 0, output_name="y")):
        stored = check_upload(data, diabetes, max_bytes=LIMIT).signature
        assert signature_difference(stored, champion, mine_is="upload", theirs_is="champion") is None
        assert dataset_fit(stored, 10, 0, "sklearn:diabetes") is None


def test_a_flat_output_becomes_a_column_of_the_same_values(diabetes) -> None:
    data = fitted_diabetes(flat=True)  # output [batch]
    checked = check_upload(data, diabetes, max_bytes=LIMIT)
    assert checked.rewritten and checked.signature.outputs[0].shape == [-1, 1]
    rows = split(diabetes).test.features
    column = predict(open_session(checked.data), rows)
    assert column.shape == (len(rows), 1)
    assert np.array_equal(column[:, 0], predict(open_session(data), rows))


def test_a_regressor_with_ferrys_names_and_a_column_is_stored_as_uploaded(diabetes) -> None:
    data = fitted_diabetes()
    checked = check_upload(data, diabetes, max_bytes=LIMIT)
    assert not checked.rewritten and checked.data == data


def test_a_classifier_for_a_regression_dataset_is_refused_saying_so(diabetes) -> None:
    above_median = LogisticRegression(max_iter=500)
    classifiers = {
        "scikit-learn": sklearn_model(
            "sklearn:diabetes", above_median, target=lambda y: (y > np.median(y)).astype(int)
        ),
        "torch": torch_network(10, 3),
    }
    for made_by, data in classifiers.items():
        with pytest.raises(UploadRejected) as refused:
            check_upload(data, diabetes, max_bytes=LIMIT)
        reason = refused.value.reason
        assert "expected one FP32 output [batch, 1] or [batch]" in reason, made_by
        assert "This is a classifier (it gives class scores or labels), but sklearn:diabetes is a regression" in reason


def test_a_regressor_for_a_classification_dataset_is_refused_saying_so(digits) -> None:
    regressor = sklearn_model("sklearn:digits", Ridge())  # the digit as a number
    with pytest.raises(UploadRejected) as refused:
        check_upload(regressor, digits, max_bytes=LIMIT)
    reason = refused.value.reason
    assert "outputs are FP32 [-1, 1]; expected one FP32 output [batch, 10]" in reason
    assert "This is a regressor (one value per row), but sklearn:digits is a classification dataset" in reason


def test_a_regressor_that_predicts_nan_is_refused(diabetes) -> None:
    with pytest.raises(UploadRejected, match="not a predicted value"):
        check_upload(linear_regressor(np.full(10, np.nan), 0.0), diabetes, max_bytes=LIMIT)


def test_a_regressor_upload_is_announced_with_the_regression_task_and_a_refused_one_stores_nothing(
    diabetes, tmp_path
) -> None:
    store, database = ArtifactStore(str(tmp_path)), MemoryDatabase()
    upload = functools.partial(
        register_upload, metrics={"rmse": 52.0}, max_bytes=LIMIT, artifacts=store, uow=database.uow()
    )
    with pytest.raises(UploadRejected, match="This is a classifier"):
        upload("diabetes-ext", torch_network(10, 3), diabetes)
    assert not list(tmp_path.rglob("*")) and database.state.outbox == []
    answer = upload("diabetes-ext", sklearn_diabetes(), diabetes)
    [row] = database.state.outbox
    event = ModelTrained.model_validate(row.payload)
    assert (event.lineage, event.dataset, event.split_id) == ("external", "sklearn:diabetes", split_id(diabetes))
    assert event.signature.task == "regression" and event.signature.bin_edges
    assert event.signature == answer.signature and store.has(answer.artifact.sha256)
    assert event.metrics == {"rmse": 52.0}


def test_the_stored_regressor_name_is_the_trainers() -> None:
    assert REGRESSION_OUTPUT_NAME == trainer.REGRESSION_OUTPUT_NAME
