"""One evaluation from records to verdict and report: load, check, score, measure, test, judge.

The handler (a candidate against the champion) and ``ferry compare`` (several versions side by side)
both build on these steps; the bench times :func:`evaluate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from services.evaluator.adapters.artifact_store import ArtifactUnusable, ModelLoader
from services.evaluator.domain.compatibility import (
    SplitCheck,
    dataset_fit,
    input_kind_difference,
    signature_difference,
    split_check,
    task_difference,
)
from services.evaluator.domain.metrics import (
    OutputsNotProbabilities,
    check_probabilities,
    check_values,
    quality,
    regression_quality,
)
from services.evaluator.domain.policy import Policy, Verdict, judge, judge_first, rejected
from services.evaluator.domain.records import VersionRecord
from services.evaluator.domain.regression import compare_regressors, regression_intervals
from services.evaluator.domain.report import ReportContext, Scored, evaluation_report, model_section
from services.evaluator.domain.slices import SliceResult, guarded_slices
from services.evaluator.domain.statistics import PairedComparison, bootstrap_one, paired_bootstrap
from shared.datasets import DatasetError, Split, load_dataset, split
from shared.errors import PermanentError
from shared.events import Task
from shared.onnx import LatencyPlan, measure_latency, predict, signature_of
from shared.parquet_datasets import held_out_split
from shared.parquet_sources import is_parquet

COMPARED_METRICS = ("accuracy", "f1_macro")


class DatasetSplits:
    """The held-out split of each dataset (for a task: a csv file may be read as either); bundled datasets are
    cut once, csv files re-read every time. A parquet: dataset gives only its first MAX_TEST_ROWS test rows,
    streamed (``shared.parquet_datasets.held_out_split``): bounded memory, whatever its size."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, Task | None], Split] = {}

    def __call__(self, dataset: str, task: Task | None = None) -> Split:
        if (dataset, task) in self._cache:
            return self._cache[(dataset, task)]
        if is_parquet(dataset):
            return held_out_split(dataset, task=task)
        cut = split(load_dataset(dataset, task=task))
        if dataset.startswith("sklearn:"):
            self._cache[(dataset, task)] = cut
        return cut


@dataclass
class Stopwatch:
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
    report: dict[str, Any]
    candidate: Scored | None = None
    champion: Scored | None = None


class Unscorable(Exception):
    """A model that cannot be scored on the split; the message is the reason."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"v{version}: {reason}")
        self.version = version


def open_model(loader: ModelLoader, record: VersionRecord, test: Split) -> ort.InferenceSession:
    """Load a version and check that what was loaded is what was declared and fits the dataset."""
    try:
        model = loader.load(record.artifact)
    except ArtifactUnusable as error:
        raise Unscorable(record.version, str(error)) from error
    loaded = signature_of(model)
    mismatch = signature_difference(loaded, record.signature, mine_is="loaded", theirs_is="registered")
    if mismatch:
        raise Unscorable(record.version, f"the artifact does not have its registered signature: {mismatch}")
    # The registered signature: its tensors are the loaded ones (checked above), and it knows the task.
    dataset = test.dataset
    misfit = dataset_fit(
        record.signature, dataset.num_features, dataset.num_classes, record.dataset, text=dataset.is_text
    )
    if misfit:
        raise Unscorable(record.version, misfit)
    return model


def score_all(
    models: Sequence[tuple[VersionRecord, ort.InferenceSession]], test: Split, latency_runs: int, watch: Stopwatch
) -> list[Scored]:
    """Every model on the same test rows: probabilities (a regressor's values) and quality, then latency by the
    one harness."""
    outputs = []
    with watch.phase("score"):
        for record, model in models:
            try:
                outputs.append(_outputs(predict(model, test.test.inputs), test))
            except OutputsNotProbabilities as error:
                raise Unscorable(record.version, str(error)) from error
    with watch.phase("metrics"):
        if test.dataset.is_regression:
            qualities = [
                regression_quality(found, test.test.labels, record.signature.bin_edges)
                for (record, _), found in zip(models, outputs, strict=True)
            ]
        else:
            qualities = [quality(found, test.test.labels, test.dataset.class_names) for found in outputs]
    with watch.phase("latency"):
        plan = LatencyPlan(runs=latency_runs)
        latencies = measure_latency([model for _, model in models], test.test.inputs, plan)
    return [
        Scored(record, probabilities, measured, latency=found.metrics() | found.counts())
        for (record, _), probabilities, measured, found in zip(models, outputs, qualities, latencies, strict=True)
    ]


def _outputs(found: np.ndarray, test: Split) -> np.ndarray:
    if test.dataset.is_regression:
        return check_values(found, len(test.test))
    return check_probabilities(found, test.dataset.num_classes)


def compare(candidate: Scored, champion: Scored, test: Split, policy: Policy) -> dict[str, PairedComparison]:
    """Paired bootstrap (and McNemar) of accuracy and macro F1 on the same resampled rows; a regressor's rmse
    and mae from the paired bootstrap of its per-row errors."""
    if test.dataset.is_regression:
        return compare_regressors(test.test.labels, candidate.predictions, champion.predictions, policy)
    return {
        metric: paired_bootstrap(
            metric,
            test.test.labels,
            candidate.predictions,
            champion.predictions,
            test.dataset.num_classes,
            samples=policy.bootstrap_samples,
            seed=policy.bootstrap_seed,
            confidence=policy.confidence,
            margin=policy.margin,
        )
        for metric in COMPARED_METRICS
    }


def evaluate(
    candidate: VersionRecord,
    champion: VersionRecord | None,
    *,
    loader: ModelLoader,
    splits: Callable[..., Split],
    policy: Policy,
    latency_runs: int,
) -> Evaluation:
    """Judge ``candidate`` against ``champion`` (or the floors when there is none), with the whole report."""
    watch = Stopwatch()
    with watch.phase("load"):
        try:
            test = splits(candidate.dataset, task=candidate.signature.task)
        except DatasetError as error:
            return _refused(candidate, None, rejected(f"reject v{candidate.version}: {error}", "dataset"), policy)
        refusal = _refusal(candidate, champion, test, policy)
        if refusal is not None:
            return _refused(candidate, test, refusal, policy)
        try:
            candidate_model = open_model(loader, candidate, test)
        except Unscorable as error:
            return _refused(candidate, test, rejected(f"reject {error}", "artifact"), policy)
        models = [(candidate, candidate_model)]
        if champion is not None:
            models.append((champion, _open_champion(loader, champion, test)))
    try:
        scored = score_all(models, test, latency_runs, watch)
    except Unscorable as error:
        if error.version != candidate.version:
            raise PermanentError(f"the champion cannot be scored, so no candidate can be judged: {error}") from error
        return _refused(candidate, test, rejected(f"reject {error}", "outputs"), policy)
    checked = split_check(candidate, champion, test.split_id, policy.split_mismatch)
    return _judged(scored, test, checked, policy, watch)


def _refusal(candidate: VersionRecord, champion: VersionRecord | None, test: Split, policy: Policy) -> Verdict | None:
    """A rejection before scoring: a task unlike the dataset's or the champion's, a split that cannot be compared
    fairly, or a signature unlike the champion's."""
    task_mismatch = task_difference(candidate, champion, test.dataset.task)
    if task_mismatch:
        return rejected(f"reject v{candidate.version}: {task_mismatch}", "task")
    kind_mismatch = input_kind_difference(candidate, champion)
    if kind_mismatch:
        return rejected(f"reject v{candidate.version}: {kind_mismatch}", "signature")
    checked = split_check(candidate, champion, test.split_id, policy.split_mismatch)
    if checked.refusal:
        return rejected(f"reject v{candidate.version}: {checked.refusal}", "split")
    if champion is None:
        return None
    mine, theirs = f"v{candidate.version}", f"champion v{champion.version}"
    mismatch = signature_difference(candidate.signature, champion.signature, mine_is=mine, theirs_is=theirs)
    if mismatch:
        return rejected(f"reject v{candidate.version}: signature differs from the champion's: {mismatch}", "signature")
    return None


def _open_champion(loader: ModelLoader, champion: VersionRecord, test: Split) -> ort.InferenceSession:
    try:
        return open_model(loader, champion, test)
    except Unscorable as error:
        # Not the candidate's fault, and no fair judgement without the baseline: the event goes to the DLQ.
        raise PermanentError(f"the champion cannot be scored, so no candidate can be judged: {error}") from error


Judgement = tuple[dict[str, Any], dict[str, Any] | None, dict[str, PairedComparison], list[SliceResult], Verdict]
"""The candidate's intervals, the champion's report section, the paired comparisons, the slices, the verdict."""


def _judged(scored: list[Scored], test: Split, checked: SplitCheck, policy: Policy, watch: Stopwatch) -> Evaluation:
    candidate = scored[0]
    champion = scored[1] if len(scored) > 1 else None
    with watch.phase("statistics"):
        judge_kind = _regressor_judgement if test.dataset.is_regression else _classifier_judgement
        intervals, champion_section, comparisons, slices, verdict = judge_kind(candidate, champion, test, policy)
    report = evaluation_report(
        _context(candidate.record, test),
        model_section(candidate, intervals),
        champion_section,
        comparisons,
        verdict,
        policy,
        checked,
        watch.timings,
        slices,
    )
    return Evaluation(verdict, report, candidate, champion)


def _classifier_judgement(candidate: Scored, champion: Scored | None, test: Split, policy: Policy) -> Judgement:
    """Bootstrap intervals alone for a first version; against a champion, the paired comparisons."""
    if champion is None:
        intervals = {
            metric: bootstrap_one(
                metric,
                test.test.labels,
                candidate.predictions,
                test.dataset.num_classes,
                samples=policy.bootstrap_samples,
                seed=policy.bootstrap_seed,
                confidence=policy.confidence,
            )
            for metric in COMPARED_METRICS
        }
        return intervals, None, {}, [], judge_first(candidate.facts(), policy)
    comparisons = compare(candidate, champion, test, policy)
    intervals = {metric: found.candidate for metric, found in comparisons.items()}
    champion_section = model_section(champion, {metric: found.champion for metric, found in comparisons.items()})
    return intervals, champion_section, comparisons, *_judge_later(candidate, champion, comparisons, test, policy)


def _regressor_judgement(candidate: Scored, champion: Scored | None, test: Split, policy: Policy) -> Judgement:
    """A regressor: floors on R², and against a champion the paired bootstrap of per-row errors."""
    targets = test.test.labels
    intervals = regression_intervals(targets, candidate.predictions, policy)
    if champion is None:
        return intervals, None, {}, [], judge_first(candidate.facts(), policy)
    comparisons = compare(candidate, champion, test, policy)
    champion_section = model_section(champion, regression_intervals(targets, champion.predictions, policy))
    return intervals, champion_section, comparisons, *_judge_later(candidate, champion, comparisons, test, policy)


def _judge_later(
    candidate: Scored, champion: Scored, comparisons: dict[str, PairedComparison], test: Split, policy: Policy
) -> tuple[list[SliceResult], Verdict]:
    """The guarded slices, and the verdict on the comparisons and the slices together."""
    record = candidate.record
    slices = guarded_slices(test, candidate.predictions, champion.predictions, record.model_name, policy, record.slices)
    return slices, judge(candidate.facts(), champion.facts(), comparisons, policy, slices)


def _context(record: VersionRecord, test: Split | None) -> ReportContext:
    if test is None:
        return ReportContext(record.model_name, record.dataset, "", 0, (), record.signature.task or "classification")
    return ReportContext(
        record.model_name,
        record.dataset,
        test.split_id,
        len(test.test),
        test.dataset.class_names,
        test.dataset.task,
    )


def _refused(candidate: VersionRecord, test: Split | None, verdict: Verdict, policy: Policy) -> Evaluation:
    identity = {
        "version": candidate.version,
        "trained_on_split": candidate.split_id,
        "artifact": {
            "sha256": candidate.artifact.sha256,
            "size_bytes": candidate.artifact.size_bytes,
            "format": candidate.artifact.format,
        },
    }
    report = evaluation_report(_context(candidate, test), identity, None, {}, verdict, policy, SplitCheck(), {})
    return Evaluation(verdict, report)
