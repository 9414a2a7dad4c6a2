"""``ferry predict`` against a real gateway with real ONNX models: per row the class (named by the labels of the
version that answered), the version that answered and the route, from CSV and JSON; a regressor's values; and a
clear refusal for rows the model cannot take."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from evaluator_onnx import fitted_diabetes
from gateway_helpers import served_gateway, store_version

from services.gateway.domain import Deployment, VersionSpec
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.onnx import open_session, predict, signature_of
from shared.ops_common import Exit
from shared.ops_tools import run_predict
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration
LABELS = ["setosa", "versicolor", "virginica"]


def test_predict_says_which_version_answered_each_row_and_by_which_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    v1, v2 = store_version(store, 1), store_version(store, 2)
    v2 = dataclasses.replace(v2, signature=v2.signature.labelled(LABELS))  # v1 names no classes
    rows = np.random.default_rng(3).normal(size=(40, 8)).round(4).tolist()
    csv_file, json_file, short = tmp_path / "rows.csv", tmp_path / "rows.json", tmp_path / "short.csv"
    csv_file.write_text("\n".join(",".join(map(str, row)) for row in rows))
    json_file.write_text(json.dumps(rows))
    short.write_text("1,2,3\n")
    deployment = Deployment("iris", 2, champion=v1, challenger=v2, canary_weight=0.5)
    with served_gateway(tmp_path, [deployment], store=store) as served:

        def predict(source: Path, *flags: str) -> int:
            args = argparse.Namespace(model="iris", file=str(source), url=served.url, json="--json" in flags)
            return run_predict(args, FerrySettings())

        assert predict(json_file, "--json") == Exit.OK
        found = json.loads(capsys.readouterr().out)
        assert [p["row"] for p in found] == list(range(1, 41))
        assert {(p["model_version"], p["route"]) for p in found} == {(1, "champion"), (2, "canary")}
        assert all(p["class"] in (0, 1, 2) and 0 <= p["score"] <= 1 for p in found)
        for answered in found:
            named = LABELS if answered["model_version"] == 2 else ["0", "1", "2"]
            assert list(answered["probabilities"]) == named
            assert answered["probabilities"][named[answered["class"]]] == answered["score"]
            assert answered["label"] == (LABELS[answered["class"]] if answered["model_version"] == 2 else None)

        assert predict(csv_file) == Exit.OK
        table = capsys.readouterr().out
        assert "canary" in table and "champion" in table and "v2" in table
        assert any(f"{index} {label}" in table for index, label in enumerate(LABELS))

        assert predict(short) == Exit.FAILED
        assert "the gateway refused row 1 (400)" in capsys.readouterr().err
        args = argparse.Namespace(model="ghost", file=str(csv_file), url=served.url, json=False)
        assert run_predict(args, FerrySettings()) == Exit.NOT_FOUND


def test_predict_gives_a_regressors_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    data = fitted_diabetes()
    _, sha256, size = store.put_bytes(data)
    spec = VersionSpec(1, sha256, size, signature_of(open_session(data)).regressor([]))
    rows = split(load_dataset("sklearn:diabetes")).test.features[:5]
    source = tmp_path / "rows.json"
    source.write_text(json.dumps(rows.tolist()))
    with served_gateway(tmp_path, [Deployment("diabetes", 1, champion=spec)], store=store) as served:
        args = argparse.Namespace(model="diabetes", file=str(source), url=served.url, json=True)
        assert run_predict(args, FerrySettings()) == Exit.OK
    found = json.loads(capsys.readouterr().out)
    expected = predict(open_session(data), rows)[:, 0]
    assert [p["value"] for p in found] == pytest.approx(expected.tolist(), rel=1e-5)
    assert all("class" not in p for p in found)
