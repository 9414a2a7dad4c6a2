"""Can these two models be compared at all? Signatures, datasets and splits, each refusal with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from services.evaluator.domain.records import VersionRecord
from shared.events import Signature, TensorSpec


def _tensors(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{spec.name} {spec.datatype} {spec.shape}" for spec in specs) or "(none)"


def signature_difference(mine: Signature, theirs: Signature, *, mine_is: str, theirs_is: str) -> str | None:
    """None when inputs and outputs agree in name, datatype and shape; else what differs."""
    problems = []
    for part in ("inputs", "outputs"):
        my_specs, their_specs = getattr(mine, part), getattr(theirs, part)
        if my_specs != their_specs:
            problems.append(f"{part} {_tensors(my_specs)} ({mine_is}) vs {_tensors(their_specs)} ({theirs_is})")
    return "; ".join(problems) or None


def task_of(signature: Signature) -> str:
    """classification or regression; a signature from before tasks is a classifier's."""
    return signature.task or "classification"


def task_difference(candidate: VersionRecord, champion: VersionRecord | None, dataset_task: str) -> str | None:
    """None when the candidate's task is its dataset's and the champion's; else why they cannot be compared."""
    mine = task_of(candidate.signature)
    if mine != dataset_task:
        return f"v{candidate.version} is a {_model_kind(mine)}, but {candidate.dataset} is a {dataset_task} dataset"
    if champion is not None and task_of(champion.signature) != mine:
        theirs = _model_kind(task_of(champion.signature))
        return (
            f"v{candidate.version} is a {_model_kind(mine)} and the champion v{champion.version} a {theirs}: a "
            "regressor cannot be compared with a classifier"
        )
    return None


def _model_kind(task: str) -> str:
    return "regressor" if task == "regression" else "classifier"


def takes_text(signature: Signature) -> bool:
    """True for a text model: its input is strings (BYTES), one per row."""
    return bool(signature.inputs) and signature.inputs[0].datatype == "BYTES"


def input_kind_difference(candidate: VersionRecord, champion: VersionRecord | None) -> str | None:
    """None unless one model takes text and the other numbers: then why they cannot be compared."""
    if champion is None or takes_text(candidate.signature) == takes_text(champion.signature):
        return None

    def kind(record: VersionRecord) -> str:
        return "a text model (BYTES input)" if takes_text(record.signature) else "a tabular model (FP32 features)"

    return (
        f"v{candidate.version} is {kind(candidate)} and the champion v{champion.version} {kind(champion)}: "
        "a text model cannot be compared with a tabular one"
    )


def dataset_fit(
    signature: Signature, num_features: int, num_classes: int, dataset: str, *, text: bool = False
) -> str | None:
    """None when the model takes one [batch, features] input (a text dataset's: BYTES [batch]) and gives one
    [batch, classes] output (a regressor: [batch, 1] or [batch])."""
    if len(signature.inputs) != 1 or len(signature.outputs) < 1:
        return f"the model has {len(signature.inputs)} inputs and {len(signature.outputs)} outputs; one of each needed"
    given, produced = signature.inputs[0], signature.outputs[0]
    if text and (given.datatype != "BYTES" or given.shape != [-1]):
        return f"input {_tensors([given])} does not take {dataset}'s texts (BYTES, one per row)"
    if not text and (given.datatype != "FP32" or len(given.shape) != 2 or given.shape[1] not in (-1, num_features)):
        return f"input {_tensors([given])} does not take {dataset}'s {num_features} FP32 features per row"
    if signature.is_regressor:
        if len(produced.shape) == 1 or (len(produced.shape) == 2 and produced.shape[1] in (-1, 1)):
            return None
        return f"output {_tensors([produced])} does not give one predicted value per row"
    if len(produced.shape) != 2 or produced.shape[1] not in (-1, num_classes):
        return f"output {_tensors([produced])} does not give {dataset}'s {num_classes} class probabilities per row"
    return None


@dataclass(frozen=True)
class SplitCheck:
    """The refusal (when the models cannot be compared fairly) or a note for the report."""

    refusal: str | None = None
    note: str | None = None
    rescored: bool = False


def split_check(
    candidate: VersionRecord, champion: VersionRecord | None, current_split_id: str, mismatch: str
) -> SplitCheck:
    """Both models are always scored on the current held-out split; these cases change what that means.

    - the candidate was trained on another split than the current one: rows of today's test split may
      have been in its training data, so its scores would flatter it → refused;
    - the champion was trained on another dataset → refused (not comparable);
    - the champion was trained on another split → both re-scored on the current split (``rescore``) or
      refused (``reject``).
    """
    if candidate.split_id != current_split_id:
        return SplitCheck(
            refusal=f"v{candidate.version} was trained on split {candidate.split_id}, but {candidate.dataset}'s "
            f"held-out split is now {current_split_id}: its test rows may have been in its training data"
        )
    if champion is None:
        return SplitCheck()
    if champion.dataset != candidate.dataset:
        return SplitCheck(
            refusal=f"v{candidate.version} was trained on {candidate.dataset}, the champion "
            f"v{champion.version} on {champion.dataset}: not comparable"
        )
    if champion.split_id == candidate.split_id:
        return SplitCheck()
    words = (
        f"champion v{champion.version} was trained on split {champion.split_id}, "
        f"v{candidate.version} on {candidate.split_id}"
    )
    if mismatch == "reject":
        return SplitCheck(refusal=f"{words}: refused (split_mismatch=reject)")
    return SplitCheck(note=f"{words}: both re-scored on the current held-out split {current_split_id}", rescored=True)
