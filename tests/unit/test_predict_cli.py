"""``ferry predict``: input parsing, a fake gateway over httpx's MockTransport (a classifier whose canary names
its classes and whose champion does not, and a regressor), the table and JSON, exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pytest

from shared.ops_common import CommandError, Exit
from shared.predict_cli import predictions, read_rows, run_predict
from shared.settings import FerrySettings

IRIS = ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    "text",
    [
        "a,b,c\n1,2,3\n4,5,6\n",
        "1,2,3\n4,5,6",
        "[[1, 2, 3], [4, 5, 6]]",
        '{"rows": [[1, 2, 3], [4, 5, 6]]}',
        "[1, 2, 3]\n[4, 5, 6]\n",
    ],
)
def test_rows_come_from_csv_or_json(text: str) -> None:
    assert read_rows(text) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_one_json_row_is_one_row() -> None:
    assert read_rows("[1, 2.5]") == [[1.0, 2.5]]


@pytest.mark.parametrize(
    ("text", "said"), [("", "empty"), ("1,2\n3,x", "row 2 is not all numbers"), ("[{", "not JSON")]
)
def test_bad_input_is_a_usage_error(text: str, said: str) -> None:
    with pytest.raises(CommandError) as refused:
        read_rows(text)
    assert refused.value.code == Exit.USAGE and said in refused.value.message


def metadata(version: str | None) -> httpx.Response:
    """digits v2 (the canary) names its classes in its first output's parameters; v1 does not."""
    output: dict[str, object] = {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    if version == "2":
        output["parameters"] = {"labels": IRIS}
    body = {"name": "digits", "inputs": [{"name": "input", "datatype": "FP32"}], "outputs": [output]}
    return httpx.Response(200, json=body)


def fake_gateway(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path in ("/v2/models/digits", "/v2/models/diabetes"):
        return metadata(None)
    if path.startswith("/v2/models/digits/versions/"):
        return metadata(path.rsplit("/", 1)[-1])
    if path in ("/v2/models/digits/infer", "/v2/models/diabetes/infer"):
        row = json.loads(request.content)["inputs"][0]["data"]
        if len(row) != 3:
            return httpx.Response(400, json={"error": "input has 2 features, the model takes 3"})
        scores = [0.1, 0.7, 0.2] if row[0] < 5 else [0.8, 0.1, 0.1]
        if "diabetes" in path:
            scores = [151.5 + row[0]]  # a regressor: one value per row
        version, route = ("2", "canary") if row[0] < 5 else ("1", "champion")
        body = {"model_name": "digits", "model_version": version, "outputs": [{"name": "p", "data": scores}]}
        return httpx.Response(200, json=body, headers={"x-ferry-route": route})
    return httpx.Response(404, json={"error": "no model 'nope'"})


def gateway() -> httpx.Client:
    return httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(fake_gateway))


def test_predictions_say_the_class_its_name_the_version_and_the_route() -> None:
    found = predictions(gateway(), "digits", [[1, 2, 3], [9, 9, 9]])
    assert [(p["class"], p["label"], p["model_version"], p["route"]) for p in found] == [
        (1, "versicolor", 2, "canary"),
        (0, None, 1, "champion"),  # v1 names no classes
    ]
    assert found[0]["probabilities"] == {"setosa": 0.1, "versicolor": 0.7, "virginica": 0.2}
    assert found[1]["probabilities"] == {"0": 0.8, "1": 0.1, "2": 0.1}


def test_a_regressors_predictions_are_its_values() -> None:
    found = predictions(gateway(), "diabetes", [[1, 2, 3], [9, 9, 9]])
    assert [(p["value"], p["model_version"]) for p in found] == [(152.5, 2), (160.5, 1)]
    assert all("class" not in p and "probabilities" not in p for p in found)


def predict(tmp_path: Path, model: str, text: str, *flags: str) -> int:
    source = tmp_path / "rows.csv"
    source.write_text(text)
    args = argparse.Namespace(model=model, file=str(source), url=None, json="--json" in flags)
    return run_predict(args, FerrySettings(), http=gateway())


def test_predict_prints_a_table_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(tmp_path, "digits", "1,2,3\n9,9,9\n") == Exit.OK
    table = capsys.readouterr().out
    assert "canary" in table and "v2" in table and "champion" in table
    assert "1 versicolor" in table and "versicolor 0.7000, virginica 0.2000, setosa 0.1000" in table
    assert "0 0.8000, 1 0.1000, 2 0.1000" in table  # v1's classes, by index
    assert predict(tmp_path, "digits", "1,2,3\n", "--json") == Exit.OK
    assert json.loads(capsys.readouterr().out) == [
        {
            "row": 1,
            "class": 1,
            "label": "versicolor",
            "score": 0.7,
            "probabilities": {"setosa": 0.1, "versicolor": 0.7, "virginica": 0.2},
            "model_version": 2,
            "route": "canary",
        }
    ]


def test_predict_prints_a_regressors_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(tmp_path, "diabetes", "1,2,3\n9,9,9\n") == Exit.OK
    table = capsys.readouterr().out
    assert "value" in table and "152.5000" in table and "160.5000" in table
    assert "class" not in table and "probabilities" not in table
    assert predict(tmp_path, "diabetes", "1,2,3\n", "--json") == Exit.OK
    assert json.loads(capsys.readouterr().out) == [{"row": 1, "value": 152.5, "model_version": 2, "route": "canary"}]


def test_predict_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(tmp_path, "nope", "1,2,3") == Exit.NOT_FOUND
    assert "serves no model 'nope'" in capsys.readouterr().err
    assert predict(tmp_path, "digits", "1,2") == Exit.FAILED
    assert "the gateway refused row 1 (400): input has 2 features" in capsys.readouterr().err
    missing = argparse.Namespace(model="digits", file=str(tmp_path / "none.csv"), url=None, json=False)
    assert run_predict(missing, FerrySettings(), http=gateway()) == Exit.NOT_FOUND
    away = argparse.Namespace(model="digits", file=str(tmp_path / "rows.csv"), url="http://127.0.0.1:9", json=False)
    assert run_predict(away, FerrySettings()) == Exit.UNREACHABLE
    assert "the gateway at http://127.0.0.1:9 is unreachable" in capsys.readouterr().err
