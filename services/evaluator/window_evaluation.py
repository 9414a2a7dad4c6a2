"""Judging a version trained on ``ORIGINAL+window:FILE``: on the original's held-out split and on the window's.

The candidate's split is rebuilt and must be the one it was trained on (its ``split_id``); its components' own
splits then hold exactly the rows it never read. Both models are judged twice by the one ``evaluate``: once on
the original's test rows (the champion's split when it was trained on the original), once on the window's test
rows. The report keeps both; ``domain/production.py`` draws the verdict the policy asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.policy import Policy
from services.evaluator.domain.production import ProductionPolicy, combined_verdict
from services.evaluator.domain.records import VersionRecord
from services.evaluator.service import Evaluation, evaluate
from shared.datasets import DatasetError, Split, split
from shared.production_names import has_window, original_of


def evaluate_candidate(
    candidate: VersionRecord,
    champion: VersionRecord | None,
    *,
    loader: ModelLoader,
    splits: Callable[..., Split],
    policy: Policy,
    latency_runs: int,
    production_policy: ProductionPolicy,
) -> Evaluation:
    """``evaluate``, or for a candidate trained on a production window, both judgements and the policy's verdict."""
    judged = _window_cuts(candidate, splits)
    if judged is None:
        return evaluate(candidate, champion, loader=loader, splits=splits, policy=policy, latency_runs=latency_runs)
    original_cut, window_cut = judged

    def on(cut: Split) -> Evaluation:
        mine = _as_judged(candidate, candidate, cut)
        theirs = _as_judged(champion, candidate, cut) if champion is not None else None
        return evaluate(
            mine, theirs, loader=loader, splits=lambda *_, **__: cut, policy=policy, latency_runs=latency_runs
        )

    on_original, on_window = on(original_cut), on(window_cut)
    cause = f"v{candidate.version} was retrained on {candidate.dataset}"
    verdict = combined_verdict(on_original.verdict, on_window.verdict, production_policy, cause)
    report = dict(on_original.report)
    report["dataset"] = candidate.dataset
    if isinstance(report.get("candidate"), dict):  # judged as of the original's split; trained on the joined one
        report["candidate"] = {**report["candidate"], "trained_on_split": candidate.split_id}
    report["production"] = {
        "policy": production_policy,
        "window": window_cut.dataset.name,
        "window_rows": len(window_cut.dataset.labels),
        "held_out_rows": len(window_cut.test),
        "original": {"dataset": original_cut.dataset.name, "decision": on_original.verdict.as_dict()},
        "report": on_window.report,
    }
    report["decision"] = verdict.as_dict()
    return Evaluation(verdict, report, on_original.candidate, on_original.champion)


def _window_cuts(candidate: VersionRecord, splits: Callable[..., Split]) -> tuple[Split, Split] | None:
    """The original's and the window's own splits; None (judged the ordinary way, which explains any refusal)
    when the dataset has no window, cannot be loaded, or is no longer the one the candidate was trained on."""
    if not has_window(candidate.dataset):
        return None
    try:
        joined = splits(candidate.dataset, task=candidate.signature.task)
    except DatasetError:
        return None
    if joined.split_id != candidate.split_id or len(joined.dataset.components) != 2:
        return None
    original, window = joined.dataset.components
    return split(original), split(window)


def _as_judged(record: VersionRecord, candidate: VersionRecord, cut: Split) -> VersionRecord:
    """``record`` as judged on ``cut``: a model trained on the candidate's original (alone or with a window) holds
    none of the cut's test rows, so it is compared on that split; any other keeps its own and is refused."""
    if original_of(record.dataset) != original_of(candidate.dataset):
        return record
    return replace(record, dataset=cut.dataset.name, split_id=cut.split_id)
