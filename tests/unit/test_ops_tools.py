"""``ferry predict``, ``alerts``, ``logs`` and ``completion``: input parsing, a fake gateway and monitor over
httpx's MockTransport, exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.ops_common import CommandError, Exit
from shared.ops_tools import alerts_table, log_files, predictions, read_rows, run_completion, run_logs, run_predict
from shared.settings import FerrySettings


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


def fake_gateway(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v2/models/digits":
        return httpx.Response(200, json={"name": "digits", "inputs": [{"name": "input", "datatype": "FP32"}]})
    if request.url.path == "/v2/models/digits/infer":
        row = json.loads(request.content)["inputs"][0]["data"]
        if len(row) != 3:
            return httpx.Response(400, json={"error": "input has 2 features, the model takes 3"})
        scores = [0.1, 0.7, 0.2] if row[0] < 5 else [0.8, 0.1, 0.1]
        version, route = ("2", "canary") if row[0] < 5 else ("1", "champion")
        body = {"model_name": "digits", "model_version": version, "outputs": [{"name": "p", "data": scores}]}
        return httpx.Response(200, json=body, headers={"x-ferry-route": route})
    return httpx.Response(404, json={"error": "no model 'nope'"})


def gateway() -> httpx.Client:
    return httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(fake_gateway))


def test_predictions_say_the_class_the_version_and_the_route() -> None:
    found = predictions(gateway(), "digits", [[1, 2, 3], [9, 9, 9]])
    assert [(p["class"], p["model_version"], p["route"]) for p in found] == [(1, 2, "canary"), (0, 1, "champion")]


def predict(tmp_path: Path, model: str, text: str, *flags: str) -> int:
    source = tmp_path / "rows.csv"
    source.write_text(text)
    args = argparse.Namespace(model=model, file=str(source), url=None, json="--json" in flags)
    return run_predict(args, FerrySettings(), http=gateway())


def test_predict_prints_a_table_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(tmp_path, "digits", "1,2,3\n9,9,9\n") == Exit.OK
    table = capsys.readouterr().out
    assert "canary" in table and "v2" in table and "champion" in table
    assert predict(tmp_path, "digits", "1,2,3\n", "--json") == Exit.OK
    assert json.loads(capsys.readouterr().out) == [
        {"row": 1, "class": 1, "score": 0.7, "model_version": 2, "route": "canary"}
    ]


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


def test_alerts_render_active_and_recent() -> None:
    alert: dict[str, Any] = {
        "rule": "error_ratio", "state": "firing", "labels": {"model": "digits", "version": "2"}, "value": 0.5,
        "threshold": 0.05, "action": "rollback", "active_at": "t0", "fired_at": "t1",
    }  # fmt: skip
    table = alerts_table({"active": [alert], "recent": [{**alert, "state": "resolved"}]}, recent=False)
    assert table.rows == [("firing", "error_ratio", "model=digits version=2", 0.5, 0.05, "rollback", "t1")]
    assert len(alerts_table({"active": [alert], "recent": [alert]}, recent=True).rows) == 2
    assert alerts_table({"active": []}, recent=False).title == "alerts: none active"


def test_logs_are_the_known_files_under_home(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    settings = FerrySettings(home=tmp_path)
    with pytest.raises(CommandError) as none:
        log_files(settings, "gateway")
    assert none.value.code == Exit.NOT_FOUND and "gateway.log" in none.value.message
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "gateway.log").write_text("one\ntwo\nthree\n")
    (tmp_path / "logs" / "registry.log").write_text("r\n")
    assert log_files(settings, None) == [tmp_path / "logs" / "gateway.log", tmp_path / "logs" / "registry.log"]
    assert run_logs(argparse.Namespace(service="gateway", lines=2, follow=False), settings) == 0
    assert capfd.readouterr().out == "two\nthree\n"


def test_completion_scripts_cover_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_completion(argparse.Namespace(shell="bash"), FerrySettings()) == Exit.OK
    script = capsys.readouterr().out
    assert "promote" in script and "rollback" in script and "completion" in script


def test_the_logs_of_a_service_are_those_of_every_replica_and_no_other(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("gateway", "gateway-2", "gateway-access", "gateway-2-access", "gateway-x", "registry-2"):
        (logs / f"{name}.log").write_text("line\n")
    settings = FerrySettings(home=tmp_path)
    assert log_files(settings, "gateway") == [logs / "gateway-2.log", logs / "gateway.log"]
    assert log_files(settings, "registry") == [logs / "registry-2.log"]
