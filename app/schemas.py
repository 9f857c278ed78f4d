"""Request and response bodies. Examples are complete, so "Try it out" in /docs works as is."""

from dataclasses import fields
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Strict,
    StrictBool,
    Tag,
    create_model,
)

from app.storage.jobs import JobStatus
from cnn_core import (
    PRESETS,
    augmentation,
    build_preset,
    layers,
    optimizers,
    schedules,
    specs,
    training,
)
from cnn_core.activations import ACTIVATIONS
from cnn_core.history import EPOCH_METRICS, EpochSummary, IterationCost

LENET5_CONFIG = build_preset("lenet5", (1, 28, 28), 10)


# The largest position (offset, iteration) the API accepts: exact as a JSON number in any
# client and far inside SQLite's 64-bit integers, so no bound check is left to the database.
MAX_POSITION = 2**53 - 1


class Body(BaseModel):
    """Base of request bodies: unknown fields and NaN/Infinity are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Numbers in request bodies are taken as JSON types them: "5", 5.0 or true is not the integer
# 5 or 1, and "0.5" is not a number (pydantic's lax mode would convert each; the schema, and so
# every client and fuzzer, says they are refused).
Integer = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Size = Annotated[Integer, Field(ge=1, le=4096)]
PresetName = StrEnum("PresetName", {name: name for name in PRESETS})


def _field_type(spec: layers.FieldSpec) -> Any:
    """The pydantic type of a layer field of each kind (see cnn_core.layers.FieldSpec)."""
    if spec.kind == "activation":
        return Literal[ACTIVATIONS]
    if spec.kind == "choice":
        return Literal[spec.choices]
    if spec.kind == "number":
        low = {"gt" if spec.exclusive_minimum else "ge": spec.minimum}
        high = {"lt" if spec.exclusive_maximum else "le": spec.maximum}
        return Annotated[Number, Field(**low, **high)]
    bounded = Annotated[Integer, Field(ge=spec.minimum, le=spec.maximum)]
    if spec.kind == "count":
        return bounded
    if spec.kind == "size":
        return bounded | tuple[bounded, bounded]
    if spec.kind == "padding":
        return bounded | tuple[bounded, bounded] | Literal["same", "valid"]
    raise ValueError(f"no schema for layer field kind {spec.kind!r}")


def _layer_schema(cls: type[layers.Layer]) -> type[BaseModel]:
    """The request body of one layer type, derived from the type's declared fields."""
    body: dict[str, Any] = {"type": (Literal[(cls.type, *cls.aliases)], ...)}
    for spec in cls.fields:
        annotation = _field_type(spec)
        if spec.default is None:
            annotation = annotation | None
        default = ... if spec.required else spec.default
        body[spec.name] = (annotation, Field(default, description=spec.description))
    return create_model(f"{cls.__name__}Layer", __base__=Body, __doc__=cls.__doc__, **body)


LAYER_SCHEMAS = [_layer_schema(cls) for cls in layers.LAYERS.values()]
Layer = Annotated[Union[tuple(LAYER_SCHEMAS)], Field(discriminator="type")]  # noqa: UP007


class Architecture(Body):
    """A network config: input shape (C, H, W) and layers; omitted fields take their defaults.
    In `POST /jobs` the input shape may be left out: it is the dataset's."""

    model_config = ConfigDict(json_schema_extra={"examples": [LENET5_CONFIG]})

    input_shape: tuple[Size, Size, Size] | None = None
    layers: Annotated[list[Layer], Field(min_length=1, max_length=64)]

    def to_config(self) -> dict[str, Any]:
        """The config dict cnn_core expects."""
        return self.model_dump(exclude_none=True)


SeedEntry = Annotated[int, Field(ge=0, le=4096)] | Annotated[str, Field(max_length=20)] | None
SeedList = Annotated[list[SeedEntry], Field(min_length=2, max_length=65)]


class SeedArchitecture(Body):
    """The seed notebook's parallel lists, entry 0 describing the input (`"init"`, its channel
    count in `nb_kernel[0]`), converted by cnn_core (see `cnn_core.config.from_seed_lists`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "input_shape": [1, 28, 28],
                    "architecture": ["init", "conv", "maxpool", "fc"],
                    "activations": ["init", "relu", "relu", "softmax"],
                    "filter_size": [0, 5, 2, 1],
                    "nb_kernel": [1, 6, 6, 10],
                    "padding": [0, 2, 0, 0],
                    "stride": [0, 1, 2, 0],
                }
            ]
        }
    )

    input_shape: tuple[Size, Size, Size] | None = None
    architecture: SeedList
    activations: SeedList
    filter_size: SeedList
    nb_kernel: SeedList
    padding: SeedList
    stride: SeedList

    def to_config(self) -> dict[str, Any]:
        """The config dict cnn_core expects."""
        return self.model_dump(exclude_none=True)


def _custom_form(value: Any) -> str:
    """Which form of config `value` is, so a wrong one is reported against that form alone
    (not against every form it is not)."""
    if isinstance(value, dict) and isinstance(value.get("architecture"), list):
        return "seed_lists"
    return "config"


CustomArchitecture = Annotated[
    Annotated[Architecture, Tag("config")] | Annotated[SeedArchitecture, Tag("seed_lists")],
    Discriminator(_custom_form),
]


class ArchitectureCheck(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"architecture": LENET5_CONFIG}]})

    architecture: CustomArchitecture


def _check_form(value: Any) -> str:
    """`{"architecture": config}` or a bare config (either form)."""
    if isinstance(value, dict) and not isinstance(value.get("architecture", []), list):
        return "wrapped"
    return _custom_form(value)


ArchitectureCheckBody = Annotated[
    Annotated[ArchitectureCheck, Tag("wrapped")]
    | Annotated[Architecture, Tag("config")]
    | Annotated[SeedArchitecture, Tag("seed_lists")],
    Discriminator(_check_form),
]


class LayerSummary(BaseModel):
    index: int
    type: str
    output_shape: list[int]
    param_count: int
    macs: int = Field(description="Multiply-adds per sample.")


class ArchitectureSummary(BaseModel):
    architecture: dict[str, Any] = Field(description="The config with every default filled in.")
    input_shape: list[int]
    n_classes: int
    layers: list[LayerSummary]
    param_count: int
    macs: int


def _setting_type(setting: specs.Hyper | specs.Flag) -> Any:
    if isinstance(setting, specs.Flag):
        return StrictBool
    low = {"gt": setting.low} if setting.low_open else {"ge": setting.low}
    high = {"lt": setting.high} if setting.high_open else {"le": setting.high}
    return Annotated[Integer if setting.integer else Number, Field(**low, **high)]


def _settings_schema(
    model: str,
    declared: dict[str, specs.Hyper | specs.Flag],
    doc: str | None = None,
    /,
    **extra: Any,
) -> type[BaseModel]:
    """A request body of settings the library declares: their defaults, bounds and words
    (``extra``: fields of the body's own, such as an optimizer's ``name``)."""
    body = {
        key: (
            _setting_type(setting),
            Field(setting.default, description=setting.description or None),
        )
        for key, setting in declared.items()
    }
    return create_model(model, __base__=Body, __doc__=doc, **extra, **body)


OPTIMIZER_SCHEMAS = {
    name: _settings_schema(
        cls.__name__, cls.hyperparameters, cls.__doc__, name=(Literal[cls.name], ...)
    )
    for name, cls in optimizers.OPTIMIZERS.items()
}
Optimizer = Annotated[Union[tuple(OPTIMIZER_SCHEMAS.values())], Field(discriminator="name")]  # noqa: UP007
SCHEDULE_SCHEMAS = [
    _settings_schema(
        f"{cls.__name__}Schedule",
        cls.settings,
        f"Learning-rate schedule {cls.name!r}, stepped per epoch (see cnn_core.schedules).",
        name=(Literal[cls.name], ...),
    )
    for cls in schedules.SCHEDULES.values()
]
LrSchedule = Annotated[Union[tuple(SCHEDULE_SCHEMAS)], Field(discriminator="name")]  # noqa: UP007
Augmentation = _settings_schema(
    "Augmentation",
    augmentation.Augmentation.settings,
    "Random transforms of each training image, drawn from the job's seed (none in prediction).",
)
# The service always restores the best weights: restore_best is the library's alone.
EarlyStopping = _settings_schema(
    "EarlyStopping",
    {k: v for k, v in training.EarlyStopping.settings.items() if k != "restore_best"},
)


class TrainingSettings(Body):
    epochs: Annotated[Integer, Field(ge=1, le=1000)] = 5
    batch_size: Annotated[Integer, Field(ge=1, le=4096)] = 64
    optimizer: Optimizer = Field(default_factory=lambda: OPTIMIZER_SCHEMAS["adam"](name="adam"))
    validation_split: Annotated[Number, Field(ge=0, le=0.5)] = 0.1
    seed: Annotated[Integer, Field(ge=0, le=2**32 - 1)] = 0
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop when the validation cost (else the training cost) stalls."
    )
    lr_schedule: LrSchedule | None = Field(
        None, description="Change the learning rate between epochs; none keeps it constant."
    )
    augmentation: Augmentation | None = Field(
        None, description="Random shifts, rotations and flips of the training images."
    )


class JobCreate(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "mnist-sample",
                    "architecture": "lenet5",
                    "training": {
                        "epochs": 3,
                        "batch_size": 32,
                        "optimizer": {"name": "adam", "learning_rate": 0.001},
                        "validation_split": 0.1,
                        "seed": 0,
                    },
                    "name": "LeNet-5 on the MNIST sample",
                }
            ]
        }
    )

    dataset_id: str = Field(description="A dataset id from GET /datasets.")
    architecture: Annotated[
        Annotated[Architecture, Tag("config")]
        | Annotated[SeedArchitecture, Tag("seed_lists")]
        | Annotated[PresetName, Tag("preset")],
        Discriminator(lambda value: "preset" if isinstance(value, str) else _custom_form(value)),
    ] = Field(
        description="A config (its input_shape may be left out: the dataset's), the seed "
        "notebook's parallel lists, or a preset name that adapts to the dataset's input and "
        "classes."
    )
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    name: Annotated[str, Field(max_length=200)] | None = None


class Progress(BaseModel):
    epoch: int
    epochs: int
    iteration: int
    iterations_per_epoch: int | None
    total_iterations: int | None
    fraction: float = Field(ge=0, le=1)
    eta_seconds: float | None


def _metrics_fields() -> dict[str, Any]:
    types = {f.name: f.type for f in fields(EpochSummary)}
    return {name: (types[name], ...) for name in EPOCH_METRICS}


EpochMetrics = create_model(
    "EpochMetrics", __doc__="One epoch's summary (cnn_core.EpochSummary).", **_metrics_fields()
)


class Job(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    dataset_id: str
    architecture: dict[str, Any]
    training: TrainingSettings
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = Field(description="1 for the next job to start; queued only.")
    progress: Progress
    metrics: EpochMetrics | None = Field(description="The latest epoch's summary.")
    error: str | None
    model_id: str | None


class JobList(BaseModel):
    jobs: list[Job]
    count: int = Field(description="Jobs matching the filter, over all pages.")
    limit: int
    offset: int


class CostHistory(BaseModel):
    status: JobStatus
    iterations: list[IterationCost]
    epochs: list[EpochMetrics]
    last_iteration: int = Field(description="Pass as `since` to get only newer points.")
    complete: bool = Field(
        description="False when more iterations follow `last_iteration` than one response "
        "holds: ask again with `since=last_iteration`."
    )


class CostsEvent(BaseModel):
    """Event `costs`: the cost points after those of the previous event. Its `id` is the last
    iteration in them: a client that reconnects sends it back as `Last-Event-ID`."""

    event: Literal["costs"]
    id: str = Field(pattern=r"^[0-9]+$")
    data: CostHistory


class ProgressEvent(BaseModel):
    """Event `progress`: the job, whenever its status, iteration or latest metrics change."""

    event: Literal["progress"]
    data: Job


class EndEvent(BaseModel):
    """Event `end`: the job in its final state; the stream ends after it."""

    event: Literal["end"]
    data: Job


class JobEvent(
    RootModel[Annotated[CostsEvent | ProgressEvent | EndEvent, Field(discriminator="event")]]
):
    """One event of `GET /jobs/{job_id}/events`, told apart by its `event` field."""


class Dataset(BaseModel):
    id: str
    name: str
    n_samples: int
    input_shape: list[int]
    classes: list[str]
    class_counts: dict[str, int]
    preprocessing: dict[str, Any]
    builtin: bool
    created_at: datetime


class DatasetList(BaseModel):
    datasets: list[Dataset]
    count: int


ModelMetrics = create_model(
    "ModelMetrics",
    __doc__="The last epoch's summary of the training that made the model.",
    epochs_trained=(int, ...),
    stopped_early=(bool, ...),
    **{
        k: v for k, v in _metrics_fields().items() if k not in ("epoch", "seconds", "learning_rate")
    },
)


class Model(BaseModel):
    id: str
    job_id: str
    name: str | None
    dataset_id: str
    created_at: datetime
    architecture: dict[str, Any]
    input_shape: list[int]
    classes: list[str]
    param_count: int
    macs: int
    layers: list[LayerSummary]
    metrics: ModelMetrics
    preprocessing: dict[str, Any]
    training: TrainingSettings


class ModelList(BaseModel):
    models: list[Model]
    count: int


# Each list's validation stops at its first wrong item: one error, not one per element.
Row = Annotated[list[Number], Field(fail_fast=True)]
Plane = Annotated[list[Row], Field(fail_fast=True)]
Instance = Annotated[list[Plane], Field(fail_fast=True)]


class PredictInstances(Body):
    """Inputs already in the model's scale, each (C, H, W): the model's `input_shape`, values
    in 0..1 for a model trained on 8-bit pixels or 0..1 floats (its preprocessing's
    `image_scale` is 1/255), in 0..255 for one trained on 0..255 floats (`image_scale` 1).
    Instances are used as sent: never inverted or reframed."""

    instances: Annotated[list[Instance], Field(min_length=1, fail_fast=True)] = Field(
        description="Each a (C, H, W) array as nested lists, C lists of H rows of W numbers; "
        "values beyond the model's scale (by more than 2% of it) are refused with a 422 "
        "that says how to scale them."
    )


class ClassScore(BaseModel):
    label: int
    class_name: str
    probability: float


class Prediction(ClassScore):
    top_k: list[ClassScore]
    index: int = Field(description="Position of the input in the request, from 0.")
    filename: str | None = Field(description="The uploaded file's name; null for instances.")
    inverted: bool = Field(
        description="Whether the image's polarity was flipped to match the training data "
        "(dark ink on light paper for a model trained on light digits on black, or the "
        "reverse); always false for instances."
    )


class Predictions(BaseModel):
    model_id: str
    predictions: list[Prediction]


class EvaluateRequest(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"dataset_id": "mnist-sample"}]})

    dataset_id: str = Field(description="A labelled dataset whose classes are the model's.")


class ClassEvaluation(BaseModel):
    class_name: str
    precision: float = Field(description="0 when the class is never predicted.")
    recall: float = Field(description="0 when the class does not occur in the dataset.")
    f1: float
    support: int = Field(description="Samples of this class in the dataset.")


class ConfusedPair(BaseModel):
    true: int = Field(description="Label (index into `classes`) of the true class.")
    predicted: int = Field(description="Label of the class predicted instead.")
    count: int


class Misclassified(BaseModel):
    true: int
    predicted: int
    indices: list[int] = Field(
        description="The first few samples (indices into the dataset) of this cell, in order."
    )


class Evaluation(BaseModel):
    model_id: str
    dataset_id: str
    n_samples: int
    accuracy: float
    cost: float = Field(description="Mean loss over the dataset (the training cost).")
    classes: list[str] = Field(description="The model's classes; labels index this list.")
    confusion_matrix: list[list[int]] = Field(
        description="Counts, rows the true class and columns the predicted one."
    )
    per_class: list[ClassEvaluation]
    most_confused: list[ConfusedPair] = Field(
        description="The largest off-diagonal cells of the confusion matrix, largest first."
    )
    misclassified: list[Misclassified] = Field(
        description="Per confused (true, predicted) cell, a few sample indices: see "
        "`GET /datasets/{id}/samples`."
    )


class LiveWorkerOut(BaseModel):
    name: str = Field(description="The worker's name (host and process id).")
    seen_at: float = Field(description="When it last reported itself alive (Unix time).")
    job_id: str | None = Field(None, description="The job it trains, if any.")


class WorkerStatus(BaseModel):
    executor: Literal["local", "rq"] = Field(
        description="local: worker processes of this server; rq: `make worker` processes that "
        "take jobs from the RQ queue"
    )
    workers: int = Field(description="Jobs that can run at once (rq: live workers).")
    running: int
    queued: int
    live_workers: list[LiveWorkerOut] = Field(
        default_factory=list, description="rq: the workers seen in the last few seconds."
    )


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    jobs: WorkerStatus
    problems: list[str] = Field(
        description="Stored records that cannot be read, skipped until they are fixed or "
        "removed (paths relative to the data directory)."
    )


class Error(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it, in one sentence.")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(
        description="Where: the source (`body`, `query`, `path`, `header`), then the path to "
        'the value in it, e.g. `["body", "training", "epochs"]`; empty for the request as a '
        "whole."
    )
    msg: str = Field(description="What is wrong there.")
    type: str = Field(
        description="A stable name for the kind of problem: pydantic's (`missing`, "
        "`extra_forbidden`, `less_than_equal`, ...), `config_error` (an architecture that "
        "cannot be built), `dataset_error`, `invalid_value` (a value the service checked), "
        "`wrong_shape` (a predict instance), `too_many_errors` (the list was cut)."
    )


class InvalidInput(BaseModel):
    """Every 422: one actionable sentence, then each problem by its place in the request."""

    detail: str = Field(
        description="The problem to fix first: what is wrong, where, and what to send "
        'instead (e.g. "Unknown field dataset: did you mean dataset_id?"), with how many more '
        "problems `errors` lists."
    )
    errors: list[ValidationIssue] = Field(
        description="Every problem found, at most 10 and then one `too_many_errors` entry."
    )


ERROR_DESCRIPTIONS = {
    400: "Input that cannot be decoded",
    401: "Missing or invalid API key",
    403: "Cross-origin request refused (a web page may not change data here)",
    404: "Not found",
    409: "Conflicts with the resource's state",
    413: "Body or image over the size limit",
    415: "Unsupported file format",
    422: "Invalid input: `detail` says what to fix first, `errors` lists every problem by place",
    429: "Job queue full; retry later",
    503: "Busy (predictions or uploads in flight) or the job database is unreachable; retry "
    "after Retry-After seconds",
}


def error_model(code: int) -> type[BaseModel]:
    """The body of an error answer with status `code`."""
    return InvalidInput if code == 422 else Error


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return."""
    return {
        code: {"model": error_model(code), "description": ERROR_DESCRIPTIONS[code]}
        for code in codes
    }
