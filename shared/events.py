"""Every event of Ferry's design, as frozen pydantic models: the contract between the services.

Each class names its CloudEvents ``type`` (the schema version is part of it) and the design topic
it travels on. Services build and receive these models; nobody hand-builds a dict.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ModelName = str  # validated by MODEL_NAME_PATTERN where it enters the system
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

# Upper bounds, so that an absurd number fails validation with a readable reason at the edge instead of
# overflowing a database column (INTEGER is 32-bit) or a library (numpy seeds are 32-bit) later.
INT32_MAX = 2**31 - 1
MAX_SEED = 2**32 - 1
MAX_ARTIFACT_BYTES = 2**40  # 1 TiB
MAX_EPOCHS = 10_000
MAX_HIDDEN_LAYERS = 64
MAX_WORLD_SIZE = 64
MAX_LABELS = 100_000  # class names a signature carries
MAX_LABEL_CHARS = 256  # per class name: shared.datasets refuses a longer one with a reason
MAX_RECIPE_OPTIONS = 32
MAX_BIN_EDGES = 64  # drift bins of a regressor's predicted value
MAX_SLICES = 32  # named slices one request may ask the evaluator to guard
Task = Literal["classification", "regression"]
"""What a model predicts: a class (scores per class) or a number (one value per row)."""
ARCH_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
"""An architecture: mlp, cnn, or the entry-point name of an installed recipe. A name only, never a path."""
OPTION_NAME_PATTERN = ARCH_PATTERN


def new_id() -> str:
    """A fresh identifier for requests and events."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    """Base of every schema: immutable, and unknown fields are an error, not silence."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Frozen):
    """Base of the events. ``type_name`` is the CloudEvents type, ``topic`` the design topic."""

    type_name: ClassVar[str]
    topic: ClassVar[str]

    model_name: str = Field(pattern=MODEL_NAME_PATTERN)

    def partition_key(self) -> str:
        """Kafka key: the model name, so one model's events stay in order."""
        return self.model_name


# --- parts -------------------------------------------------------------------------------------


class TensorSpec(Frozen):
    """One named tensor of a model's signature, in Open Inference Protocol terms."""

    name: str
    datatype: str = Field(description="OIP v2 datatype, e.g. FP32, INT64")
    shape: list[Annotated[int, Field(ge=-1, le=INT32_MAX)]] = Field(
        max_length=32, description="-1 marks a dynamic axis (the batch)"
    )


class Signature(Frozen):
    """A model's input and output tensors, as the registry records and the gateway checks them; ``labels``
    names the classes of the first output (the class scores), index by index, when the dataset named them;
    ``task`` says whether it is a classifier or a regressor, and a regressor's ``bin_edges`` cut its predicted
    value into the bins its drift is measured on."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[Annotated[str, Field(max_length=MAX_LABEL_CHARS)]] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description="class names of the first output's scores, in index order; absent in events before labels",
    )
    task: Task | None = Field(default=None, description="classification or regression; absent (a classifier) before")
    bin_edges: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None,
        max_length=MAX_BIN_EDGES,
        description="a regressor's inner bin edges, ascending: bin i holds values v with edges[i-1] < v <= edges[i]",
    )

    @property
    def is_regressor(self) -> bool:
        """True for a regressor: one predicted value per row."""
        return self.task == "regression"

    @model_validator(mode="after")
    def _one_label_per_class(self) -> Signature:
        if self.labels is None:
            return self
        first = self.outputs[0].shape if self.outputs else []
        classes = first[-1] if first else None
        if classes is None or (classes >= 0 and classes != len(self.labels)):
            raise ValueError(f"{len(self.labels)} labels for a first output of shape {first}: one label per class")
        return self

    @model_validator(mode="after")
    def _edges_of_a_regressor(self) -> Signature:
        if self.bin_edges is None:
            return self
        if self.task != "regression":
            raise ValueError("bin_edges belong to a regressor (task: regression)")
        if any(low >= high for low, high in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must be strictly ascending")
        return self

    def labelled(self, labels: Sequence[str]) -> Signature:
        """The same tensors, the first output's classes named ``labels`` (a dataset's class names)."""
        return Signature(inputs=self.inputs, outputs=self.outputs, labels=list(labels), task=self.task)

    def regressor(self, bin_edges: Sequence[float]) -> Signature:
        """The same tensors, marked as a regressor whose predicted value is binned at ``bin_edges``."""
        return Signature(inputs=self.inputs, outputs=self.outputs, task="regression", bin_edges=list(bin_edges))


MAX_REFERENCE_FEATURES = 64
"""Features an input reference keeps at most: a wider input (image pixels) keeps its most varied ones."""


class FeatureReference(Frozen):
    """One numeric input feature on the training split: its inner quantile edges and the rows per bin (bin i
    holds values v with edges[i-1] < v <= edges[i], as a regressor's ``bin_edges``)."""

    index: int = Field(ge=0, le=INT32_MAX, description="the feature's position in a row of the flattened input")
    edges: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(max_length=MAX_BIN_EDGES)
    counts: list[Annotated[int, Field(ge=0, le=2**53)]] = Field(min_length=1, max_length=MAX_BIN_EDGES + 1)

    @model_validator(mode="after")
    def _a_count_per_bin(self) -> FeatureReference:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges make {len(self.edges) + 1} bins, got {len(self.counts)} counts")
        if any(low >= high for low, high in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly ascending")
        return self


class InputReference(Frozen):
    """What a model's numeric input looked like on its training split, per feature: the reference of input
    drift. ``row_size`` values make one row of the input ``input``; ``features`` are all of them up to
    MAX_REFERENCE_FEATURES, else the most varied ones (``selection``)."""

    input: str = Field(max_length=256, description="the input tensor's name in the signature")
    row_size: int = Field(ge=1, le=INT32_MAX, description="values per row of the flattened input")
    rows: int = Field(ge=1, le=2**53, description="training rows the counts were taken on")
    selection: Literal["all", "variance"] = Field(
        description="all: every feature; variance: the MAX_REFERENCE_FEATURES of highest training variance"
    )
    features: list[FeatureReference] = Field(min_length=1, max_length=MAX_REFERENCE_FEATURES)

    @model_validator(mode="after")
    def _features_of_a_row(self) -> InputReference:
        indices = [feature.index for feature in self.features]
        if indices != sorted(set(indices)) or indices[-1] >= self.row_size:
            raise ValueError("feature indices must be ascending, unique and inside a row")
        return self


class ArtifactRef(Frozen):
    """A content-addressed artifact in the store."""

    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0, le=MAX_ARTIFACT_BYTES)
    format: str = Field(description="onnx, onnx-int8, ...")


class Hyperparameters(Frozen):
    """How a model is trained: epochs, batch size, optimizer, hidden sizes, seed, early stopping."""

    epochs: int = Field(default=30, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    # Sanity bounds only: the trainer's plan checks the real limits and answers with a failed status.
    hidden_sizes: list[Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]] = Field(
        default_factory=lambda: [256, 128], max_length=MAX_HIDDEN_LAYERS
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    patience: int = Field(default=5, ge=1, le=MAX_EPOCHS, description="early stopping: epochs without validation gain")
    options: dict[
        Annotated[str, Field(pattern=OPTION_NAME_PATTERN)],
        Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]
        | Annotated[float, Field(allow_inf_nan=False)]
        | Annotated[str, Field(max_length=200)],
    ] = Field(
        default_factory=dict,
        max_length=MAX_RECIPE_OPTIONS,
        description="a recipe's own hyper-parameters, e.g. hidden_size: 64 (`ferry recipes` lists each recipe's "
        "with its defaults); empty for mlp and cnn",
    )


class FeatureSlice(Frozen):
    """A named range of one input feature that the evaluator guards: the held-out rows whose feature ``feature``
    (of the flattened input row) is at least ``min`` and below ``max`` (a missing bound is open). A candidate
    significantly worse than the champion on it, beyond the evaluator's slice margin, is rejected."""

    name: str = Field(min_length=1, max_length=100)
    feature: int = Field(ge=0, le=INT32_MAX, description="index of the feature in the flattened input row")
    min: float | None = Field(default=None, allow_inf_nan=False, description="inclusive lower bound")
    max: float | None = Field(default=None, allow_inf_nan=False, description="exclusive upper bound")

    @model_validator(mode="after")
    def _a_range(self) -> FeatureSlice:
        if self.min is None and self.max is None:
            raise ValueError(f"slice {self.name!r} needs a min, a max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"slice {self.name!r}: min {self.min:g} must be below max {self.max:g}")
        return self


def _distinct_names(slices: list[FeatureSlice]) -> list[FeatureSlice]:
    names = [item.name for item in slices]
    if len(set(names)) != len(names):
        raise ValueError("each slice needs a name of its own")
    return slices


Slices = Annotated[list[FeatureSlice], Field(max_length=MAX_SLICES), AfterValidator(_distinct_names)]


class Compression(Frozen):
    """What to make smaller, applied in this order: prune, distill (training the pruned network from the
    teacher), quantize. The result is checked against the uncompressed model's validation accuracy."""

    quantize: Literal["int8", "int8-static", "int8-dynamic"] | None = Field(
        default=None,
        description="int8: static (QDQ, calibrated on training rows) or dynamic, whichever the trainer measures "
        "faster on its CPU; int8-static or int8-dynamic: that one",
    )
    prune: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="share of the prunable layers' parameters removed, as whole hidden units and channels "
        "(smallest L2 norm first), then fine-tuned",
    )
    distill_from: str | None = Field(default=None, description="teacher model name (its champion)")
    max_accuracy_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="the run fails when the compressed model's validation accuracy is below the uncompressed "
        "model's (the teacher's, when distilling) by more than this",
    )


# --- the events --------------------------------------------------------------------------------


class RetrainCause(Frozen):
    """Why a retraining was requested: the alert that asked for it and the production window it carries."""

    alert_id: str = Field(min_length=1, max_length=200, description="the alert event's CloudEvents id")
    rule: str = Field(min_length=1, max_length=200)
    version: int | None = Field(default=None, ge=1, le=INT32_MAX, description="the version the alert named")
    fired_at: datetime = Field(description="the alert's since")
    champion_version: int | None = Field(default=None, ge=1, le=INT32_MAX, description="whose recipe is retrained")
    original_dataset: str = Field(min_length=1, description="the champion's dataset, before the window was added")
    window: str = Field(min_length=1, description="the window file, relative to the datasets root")
    window_rows: int = Field(ge=0, le=INT32_MAX, description="labelled production rows in the window")


class TrainingRequested(Event):
    """Train this model on this dataset with these settings."""

    type_name: ClassVar[str] = "ferry.training.requested.v1"
    topic: ClassVar[str] = "training.requested"

    request_id: str = Field(default_factory=new_id, min_length=1, max_length=200)
    dataset: str = Field(min_length=1, description="sklearn:digits, csv:PATH, ...")
    arch: str = Field(
        default="mlp",
        pattern=ARCH_PATTERN,
        description="mlp, cnn, or the name of an installed recipe (entry-point group ferry.recipes)",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    compression: Compression = Field(default_factory=Compression)
    label_column: str | None = Field(default=None, description="for csv datasets; default 'label'")
    task: Task | None = Field(
        default=None,
        description="classification or regression; default: the dataset's own (sklearn:diabetes is regression, "
        "a csv file classification)",
    )
    world_size: int = Field(default=1, ge=1, le=MAX_WORLD_SIZE, description="DDP processes")
    requested_by: str | None = None
    slices: Slices = Field(
        default_factory=list,
        description="feature ranges the evaluator guards for the trained version, beside each class's recall",
    )
    cause: RetrainCause | None = Field(
        default=None, description="set when an alert asked for this run (action retrain): its lineage"
    )


class TrainingStatus(Event):
    """Progress of one training request."""

    type_name: ClassVar[str] = "ferry.training.status.v1"
    topic: ClassVar[str] = "training.status"

    request_id: str
    state: Literal["started", "progress", "completed", "failed"]
    epoch: int | None = Field(default=None, ge=0, le=INT32_MAX)
    epochs: int | None = Field(default=None, ge=0, le=INT32_MAX)
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    reason: str | None = None
    artifact_sha256: str | None = None

    def partition_key(self) -> str:
        """Kafka key: the training request id, so one run's progress stays in order."""
        return self.request_id


class ModelTrained(Event):
    """An exported, verified artifact exists for a training request."""

    type_name: ClassVar[str] = "ferry.model.trained.v1"
    topic: ClassVar[str] = "model.trained"

    request_id: str
    artifact: ArtifactRef
    signature: Signature
    metrics: dict[str, float] = Field(default_factory=dict)
    dataset: str
    split_id: str = Field(description="fingerprint of the deterministic split")
    arch: str
    hyperparameters: Hyperparameters
    compression: Compression = Field(default_factory=Compression)
    teacher_version: int | None = Field(default=None, ge=1, le=INT32_MAX)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    lineage: Literal["ferry", "external"] = Field(
        default="ferry", description="ferry: trained by Ferry's trainer; external: uploaded (ferry register)"
    )
    slices: Slices = Field(default_factory=list, description="the training request's slices, for the evaluator")
    input_reference: InputReference | None = Field(
        default=None,
        description="the training split's per-feature bins, the reference of input drift; absent for a text "
        "model, and in events before it",
    )
    cause: RetrainCause | None = Field(
        default=None, description="the training request's cause: the alert that asked for this retraining, if any"
    )


class ModelRegistered(Event):
    """Version N of the model now exists in the registry."""

    type_name: ClassVar[str] = "ferry.model.registered.v1"
    topic: ClassVar[str] = "model.registered"

    version: int = Field(ge=1, le=INT32_MAX)
    artifact: ArtifactRef
    signature: Signature
    dataset: str
    split_id: str
    metrics: dict[str, float] = Field(default_factory=dict)
    training_request_id: str | None = None


class ModelDecided(Event):
    """The evaluator's (or a user's) decision about a version."""

    type_name: ClassVar[str] = "ferry.model.decided.v1"
    topic: ClassVar[str] = "model.decided"

    version: int = Field(ge=1, le=INT32_MAX, description="the candidate, or the version rolled back from")
    decision: Literal["promote", "reject", "rollback"]
    stage: Literal["canary", "champion"] | None = Field(default=None, description="for promote")
    canary_weight: float | None = Field(default=None, ge=0, le=1)
    baseline_version: int | None = Field(default=None, ge=1, le=INT32_MAX)
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline_metrics: dict[str, float] = Field(default_factory=dict)
    reason: str = Field(min_length=1)
    actor: str = "evaluator"
    report: dict[str, Any] = Field(
        default_factory=dict,
        description="the evaluator's whole evaluation report (both models' metrics, the test, the policy); "
        "the registry stores it with the evaluation",
    )


class DeployedVersion(Frozen):
    """One version in a deployment: its number, its artifact and its signature."""

    version: int = Field(ge=1, le=INT32_MAX)
    artifact: ArtifactRef
    signature: Signature


class DeploymentChanged(Event):
    """The deployment of a model after a change: what the gateway must serve."""

    type_name: ClassVar[str] = "ferry.deployment.changed.v1"
    topic: ClassVar[str] = "deployment.changed"

    revision: int = Field(ge=1, le=INT32_MAX)
    champion: DeployedVersion | None = None
    challenger: DeployedVersion | None = None
    canary_weight: float = Field(default=0.0, ge=0, le=1)
    shadow: bool = False
    reason: str = ""
    actor: str = ""


class AlertChanged(Event):
    """An alert rule fired or resolved for a model."""

    type_name: ClassVar[str] = "ferry.alert.v1"
    topic: ClassVar[str] = "alert"

    rule: str
    state: Literal["fired", "resolved"]
    version: int | None = Field(default=None, ge=1, le=INT32_MAX)
    severity: Literal["info", "warning", "critical"] = "warning"
    action: Literal["notify", "rollback", "retrain"] = "notify"
    value: float
    threshold: float
    labels: dict[str, str] = Field(default_factory=dict)
    since: datetime = Field(default_factory=utc_now)

    def partition_key(self) -> str:
        """Kafka key: ``rule:model``, so one rule's alerts about one model stay in order."""
        return f"{self.rule}:{self.model_name}"


# --- production data (the closing loop) ---------------------------------------------------------

MAX_LOGGED_VALUES = 4096
"""Values one logged tensor may carry; the gateway cuts a larger one and marks the record truncated."""
MAX_FEEDBACK_ITEMS = 1000
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


class LoggedTensor(Frozen):
    """One input or output of a logged inference, flattened row-major; ``shape`` is the tensor's own,
    so a truncated tensor's ``data`` holds fewer values than the shape says."""

    name: str = Field(max_length=256)
    datatype: str = Field(description="OIP v2 datatype, e.g. FP32, BYTES")
    shape: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] = Field(max_length=32)
    data: list[float | int | bool | str] = Field(max_length=MAX_LOGGED_VALUES)


class InferenceLogged(Event):
    """A sampled request the gateway answered, with what it was asked and what it answered."""

    type_name: ClassVar[str] = "ferry.inference.logged.v1"
    topic: ClassVar[str] = "inference.logged"

    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="the OIP request id, or the gateway's own")
    version: int = Field(ge=1, le=INT32_MAX)
    route: Literal["champion", "canary", "pinned", "fallback", "shadow"]
    revision: int | None = Field(default=None, ge=1, le=INT32_MAX, description="the deployment revision served")
    inputs: list[LoggedTensor] = Field(max_length=64)
    outputs: list[LoggedTensor] = Field(max_length=64)
    truncated: bool = Field(default=False, description="a tensor was cut to MAX_LOGGED_VALUES, or rows dropped")
    gateway: str = Field(default="", max_length=256, description="the gateway process that answered")
    at: datetime = Field(default_factory=utc_now)


class FeedbackItem(Frozen):
    """The ground truth of one answered request: a class (index or label) or a regressor's true value."""

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    label: Annotated[int, Field(ge=0, le=INT32_MAX)] | Annotated[str, Field(max_length=MAX_LABEL_CHARS)] | None = None
    value: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_truth(self) -> FeedbackItem:
        if (self.label is None) == (self.value is None):
            raise ValueError("a feedback item carries a label (classifier) or a value (regressor), one of them")
        return self


class InferenceFeedback(Event):
    """Ground truth for requests a model answered, by request id (``POST /v2/models/{name}/feedback``)."""

    type_name: ClassVar[str] = "ferry.inference.feedback.v1"
    topic: ClassVar[str] = "inference.feedback"

    items: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)
    actor: str = Field(default="", max_length=256)
    at: datetime = Field(default_factory=utc_now)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (
        TrainingRequested,
        TrainingStatus,
        ModelTrained,
        ModelRegistered,
        ModelDecided,
        DeploymentChanged,
        AlertChanged,
        InferenceLogged,
        InferenceFeedback,
    )
}

TOPICS: tuple[str, ...] = tuple(dict.fromkeys(cls.topic for cls in EVENT_TYPES.values()))


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event, keyed by its type: the documentation is generated from here."""
    return {name: cls.model_json_schema() for name, cls in EVENT_TYPES.items()}
