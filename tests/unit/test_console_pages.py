"""The console's pages over fake sources: each renders its content, escapes what it shows, says when a
source is away (and still renders), and loads no script of its own making inline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from console_fakes import HOSTILE, NOW, Fakes, dead_letter, history_entry, version
from fastapi.testclient import TestClient

from services.console.entrypoints.api import create_app
from shared.events import Signature, TrainingRequested, TrainingStatus

LATER = NOW + timedelta(minutes=2)
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
PAGES = ["/", "/models/iris", "/models/iris/versions/3/evaluation", "/models/iris/compare?v=2&v=3", "/training",
         "/alerts", "/dead-letters"]  # fmt: skip


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def client(fakes: Fakes) -> Iterator[TestClient]:
    with TestClient(create_app(fakes.deps())) as http:
        yield http


def firing(model: str = "iris") -> dict[str, object]:
    return {
        "rule": "latency_p99", "state": "firing", "labels": {"model": model, "version": "3"}, "value": 0.31,
        "threshold": 0.25, "severity": "page", "action": "rollback", "summary": "p99 above 250 ms",
        "active_at": NOW.isoformat(), "fired_at": NOW.isoformat(), "resolved_at": None,
    }  # fmt: skip


def test_the_models_page_shows_each_model_with_what_serves_it_its_last_decision_and_alerts(
    fakes: Fakes, client: TestClient
) -> None:
    fakes.monitor.active = [firing()]
    page = client.get("/")
    assert page.status_code == 200
    row = re.search(r'<tr data-testid="model-row-iris">(.*?)</tr>', page.text, re.S)
    assert row is not None
    cells = row.group(1)
    assert re.search(r'data-testid="champion-cell">v2<', cells) and re.search(
        r'data-testid="challenger-cell">v3<', cells
    )
    assert "20%" in cells and "v3 is non-inferior to v2" in cells and "latency_p99 (firing)" in cells


def test_the_model_page_shows_versions_history_the_gateways_view_and_the_bake(client: TestClient) -> None:
    page = client.get("/models/iris").text
    assert all(f'data-testid="version-row-{n}"' in page for n in (1, 2, 3))
    assert page.count('data-testid="history-entry"') == 3
    assert "v2 beats v1 on accuracy" in page and "request <code>req-3</code>" in page
    assert "teacher iris-big v2" in page  # v3 was distilled from iris-big's v2
    agreement = re.search(r'data-testid="shadow-agreement">\s*(\S+)', page)
    assert agreement is not None and agreement.group(1) == "90%"  # 45 of 50 shadow answers agreed
    assert "v3 bakes until 2026-12-05 00:00:00 UTC" in page
    assert 'data-testid="action-rollback" data-kind="rollback" data-version="2"' in page
    assert 'data-testid="action-withdraw" data-kind="rollback" data-version="3"' in page


def test_the_versions_table_shows_the_validation_metrics_of_each_versions_task(
    fakes: Fakes, client: TestClient
) -> None:
    regressor = {"signature": Signature(inputs=[], outputs=[], task="regression")}
    fakes.registry.versions_ = [
        version(3, "challenger", metrics={"val_rmse": 48.5, "val_r2": 0.61, "val_loss": 0.4}, **regressor),
        version(2, "champion"),
        version(1, "archived", metrics={"accuracy": 0.9}),
    ]
    page = client.get("/models/iris").text
    cells = re.findall(r'data-testid="version-validation">([^<]*)</td>', page)
    assert cells == ["RMSE 48.5000 · R² 0.6100", "accuracy 0.9200", "-"]


def test_every_page_escapes_what_its_sources_say(fakes: Fakes, client: TestClient) -> None:
    fakes.dead_letters.letters[fakes.settings.topic("training.status")] = [dead_letter(value=HOSTILE.encode())]
    fakes.runs.apply(TrainingStatus(model_name="iris", request_id="r1", state="failed", reason=HOSTILE), NOW)
    for path in ("/models/iris", "/models/iris/versions/3/evaluation", "/dead-letters", "/training"):
        text = client.get(path).text
        assert HOSTILE not in text, path
        assert ESCAPED in text or "&lt;script&gt;alert(\\&#34;x\\&#34;)" in text, path


def test_the_evaluation_page_plots_each_interval_and_explains_the_paired_tests(client: TestClient) -> None:
    page = client.get("/models/iris/versions/3/evaluation").text
    found = re.search(r'<script type="application/json" id="ci-data">(.*?)</script>', page, re.S)
    assert found is not None
    plot = json.loads(found.group(1))
    assert plot["labels"] == ["accuracy", "macro F1"]
    candidate, champion = plot["datasets"]
    assert candidate["label"] == "v3 (candidate)" and candidate["estimates"] == pytest.approx([0.94, 0.93])
    assert [pytest.approx(bar) for bar in candidate["bars"]] == [[0.91, 0.96], [0.89, 0.95]]
    assert champion["label"] == "v2 (champion)" and champion["estimates"] == pytest.approx([0.91, 0.9])
    assert "the candidate got 4 and the champion 1" in page and "p = 0.3750" in page
    assert "the interval includes 0" in page
    assert page.count('data-testid="confusion-matrix"') == 2 and "versicolor" in page
    assert 'data-testid="check-row"' in page and "v3 is non-inferior to v2" in page


def test_the_evaluation_page_shows_each_slice_with_its_judgement(client: TestClient) -> None:
    page = client.get("/models/iris/versions/3/evaluation").text
    rows = re.findall(r'<tr data-testid="slice-row" data-slice="([^"]*)">(.*?)</tr>', page, re.S)
    assert [name for name, _ in rows] == ["virginica", "petal-long", "wide"]
    judgements = [re.search(r'data-testid="slice-judgement">(.*?)</td>', cells, re.S).group(1) for _, cells in rows]  # type: ignore[union-attr]
    assert "reported only" in judgements[0] and "worse beyond 0.1000" in judgements[1]
    assert '-0.3700 <span class="muted">[-0.5300, -0.2000]' in rows[1][1]
    assert "class virginica" in rows[0][1] and "range petal-long" in rows[1][1]


def test_compare_shows_each_version_and_the_recorded_difference_against_the_first(client: TestClient) -> None:
    page = client.get("/models/iris/compare?v=3&v=2").text  # in any order: the oldest is the baseline
    assert 'data-testid="compare-column-2"' in page and 'data-testid="compare-column-3"' in page
    difference = re.search(r'data-testid="compare-difference-3">(.*?)</div>', page, re.S)
    assert difference is not None and "no clear difference" in difference.group(1)
    plot = json.loads(re.search(r'id="compare-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert [dataset["label"] for dataset in plot["datasets"]] == ["v2", "v3"]


def test_the_alerts_page_shows_the_value_against_its_threshold_and_the_action(fakes: Fakes, client: TestClient) -> None:
    fakes.monitor.active = [firing()]
    assert 'data-testid="alert-followed"' not in client.get("/alerts").text  # nothing has followed yet
    withdrawn = history_entry(
        5, "rollback", 2, 2, "latency_p99 fired", from_challenger=3, from_canary_weight=0.2, created_at=LATER
    )
    fakes.registry.history_.insert(0, withdrawn)
    page = client.get("/alerts").text
    assert "followed by rollback at revision 5" in page
    assert 'data-testid="alert-row" data-rule="latency_p99" data-kind="active"' in page
    assert re.search(r"0\.3100 <span class=\"muted\">against 0\.2500", page)
    assert re.search(r'data-testid="alert-action">rollback\s', page) and 'data-testid="rule-row"' in page


def test_the_dead_letters_page_shows_reason_service_time_payload_and_a_replay(fakes: Fakes, client: TestClient) -> None:
    fakes.dead_letters.letters[fakes.settings.topic("training.status")] = [dead_letter(reason="no such artifact")]
    page = client.get("/dead-letters").text
    assert page.count('data-testid="dead-letter-row"') == 1
    assert "no such artifact" in page and "registry" in page and "2026-12-05 00:00:00 UTC" in page
    assert "&#34;request_id&#34;: &#34;r1&#34;" in page
    assert 'data-testid="replay-button" data-topic="ferry.training.status" data-ident="0:7"' in page
    assert client.get("/dead-letters?topic=nope").status_code == 404


def test_the_training_page_lists_runs_with_progress_and_the_failures_with_reasons(
    fakes: Fakes, client: TestClient
) -> None:
    fakes.runs.apply(TrainingRequested(model_name="iris", request_id="r9", dataset="sklearn:iris"), NOW)
    fakes.runs.apply(TrainingStatus(model_name="iris", request_id="r9", state="progress", epoch=4, epochs=10), NOW)
    fakes.runs.apply(
        TrainingStatus(model_name="iris", request_id="r8", state="failed", reason="dataset csv:x not found"), NOW
    )
    page = client.get("/training").text
    assert re.search(r'value="0.4" data-testid="run-progress-r9"', page)
    assert 'data-testid="failure-row-r8"' in page and "dataset csv:x not found" in page


@pytest.mark.parametrize("source", ["monitor", "evaluator", "gateways"])
def test_a_source_that_is_away_is_a_notice_and_the_page_still_renders(
    fakes: Fakes, client: TestClient, source: str
) -> None:
    getattr(fakes, source).down = True
    for path in ("/", "/models/iris", "/alerts"):
        page = client.get(path)
        assert page.status_code == 200
    page = client.get("/models/iris").text
    assert re.search(rf'data-testid="source-notice">{source.rstrip("s")} unreachable', page)
    assert 'data-testid="version-row-3"' in page


def test_a_registry_that_is_away_is_a_notice_too(fakes: Fakes, client: TestClient) -> None:
    fakes.registry.down = True
    for path in ("/", "/models/iris", "/models/iris/versions/3/evaluation"):
        page = client.get(path)
        assert page.status_code == 200 and "registry unreachable" in page.text, path
    assert 'data-testid="models-empty"' not in client.get("/").text  # not "no model is registered"


def test_what_does_not_exist_is_a_404_page(client: TestClient) -> None:
    assert client.get("/models/ghost").status_code == 404
    assert client.get("/models/iris/versions/9/evaluation").status_code == 404
    assert client.get("/models/iris/versions/3/evaluation?index=5").status_code == 404


def test_a_version_not_evaluated_yet_says_so(client: TestClient) -> None:
    page = client.get("/models/iris/versions/1/evaluation")
    assert page.status_code == 200 and "has not judged v1 yet" in page.text


def test_pages_load_only_their_own_scripts_and_every_asset_they_name_exists(client: TestClient) -> None:
    for path in PAGES:
        page = client.get(path)
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for tag in re.findall(r"<script\b[^>]*>", page.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)
        assert all("scope=" in cell for cell in re.findall(r"<th\b[^>]*>", page.text)), path  # each names its scope
        for asset in set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)):
            assert client.get(asset).status_code == 200, asset
    assert client.get("/favicon.ico").status_code == 200


@pytest.mark.parametrize(
    ("path", "section"),
    [("/", "models"), ("/training", "training"), ("/alerts", "alerts"), ("/dead-letters", "dead-letters")],
)
def test_the_nav_bar_marks_the_section_shown(client: TestClient, path: str, section: str) -> None:
    page = client.get(path).text
    assert re.findall(r'data-testid="nav-([a-z-]+)" aria-current="page"', page) == [section]


def test_a_broker_that_is_away_is_one_notice_on_the_dead_letters_page(fakes: Fakes, client: TestClient) -> None:
    fakes.dead_letters.down = True
    page = client.get("/dead-letters")
    assert page.status_code == 200 and page.text.count("Kafka unreachable") == 1
    assert fakes.dead_letters.reads == 1  # the other topics do not each wait for the same broker


def test_compare_scores_afresh_only_when_asked_and_shows_what_ferry_compare_printed(
    fakes: Fakes, client: TestClient
) -> None:
    page = client.get("/models/iris/compare?v=2&v=3").text
    assert 'data-testid="fresh-compare-submit"' in page and fakes.fresh.asked == []
    page = client.get("/models/iris/compare?v=2&v=3&fresh=true").text
    assert fakes.fresh.asked == [("iris", [2, 3])]
    assert 'data-testid="fresh-table"' in page and "360 held-out rows" in page
    words = re.search(r'data-testid="fresh-difference-3">(.*?)</div>', page, re.S)
    assert words is not None and "this version got 9 and v2 4" in words.group(1) and "p = 0.2100" in words.group(1)
    plot = json.loads(re.search(r'id="fresh-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert plot == {
        "labels": ["v3 accuracy"], "bars": [[-0.004, 0.024]], "estimates": [0.01], "label": "difference against v2"
    }  # fmt: skip


def test_a_fresh_comparison_that_fails_is_a_notice(fakes: Fakes, client: TestClient) -> None:
    fakes.fresh.down = True
    page = client.get("/models/iris/compare?v=2&v=3&fresh=true")
    assert page.status_code == 200 and "ferry compare failed: exit 1: cannot compare" in page.text
    assert 'data-testid="compare-column-3"' in page.text
