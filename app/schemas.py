"""Request and response bodies. Examples are complete, so "Try it out" in /docs works as is."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.storage.jobs import JobStatus
from cnn_core import PRESETS

LENET5_CONFIG = {
    "input_shape": [1, 28, 28],
    "layers": [
        {
            "type": "conv",
            "filters": 6,
            "kernel_size": 5,
            "stride": 1,
            "padding": 2,
            "activation": "relu",
        },
        {"type": "maxpool", "pool_size": 2, "stride": 2},
        {"type": "conv", "filters": 16, "kernel_size": 5, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 120, "activation": "relu"},
        {"type": "dense", "units": 84, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
}


# The largest position (offset, iteration) the API accepts: exact as a JSON number in any
# client and far inside SQLite's 64-bit integers, so no bound check is left to the database.
MAX_POSITION = 2**53 - 1


class Body(BaseModel):
    """Base of request bodies: unknown fields and NaN/Infinity are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Size = Annotated[int, Field(ge=1, le=4096)]
Pair = Size | tuple[Size, Size]
Activation = Literal["relu", "sigmoid", "tanh", "softmax", "linear"]
PresetName = StrEnum("PresetName", {name: name for name in PRESETS})


class ConvLayer(Body):
    type: Literal["conv"]
    filters: Annotated[int, Field(ge=1, le=4096)]
    kernel_size: Pair
    stride: Pair = 1
    padding: Annotated[int, Field(ge=0, le=4096)] | tuple[int, int] | Literal["same", "valid"] = 0
    activation: Activation | None = None


class PoolLayer(Body):
    type: Literal["maxpool", "avgpool"]
    pool_size: Pair
    stride: Pair | None = None


class FlattenLayer(Body):
    type: Literal["flatten"]


class DenseLayer(Body):
    type: Literal["dense", "fc"]
    units: Annotated[int, Field(ge=1, le=1_000_000)]
    activation: Activation | None = None


Layer = Annotated[ConvLayer | PoolLayer | FlattenLayer | DenseLayer, Field(discriminator="type")]


class Architecture(Body):
    """A network config: input shape (C, H, W) and layers; omitted fields take their defaults."""

    model_config = ConfigDict(json_schema_extra={"examples": [LENET5_CONFIG]})

    input_shape: tuple[Size, Size, Size]
    layers: Annotated[list[Layer], Field(min_length=1, max_length=64)]

    def to_config(self) -> dict[str, Any]:
        """The config dict cnn_core expects."""
        return self.model_dump(exclude_none=True)


class ArchitectureCheck(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"architecture": LENET5_CONFIG}]})

    architecture: Architecture


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


LearningRate = Annotated[float, Field(gt=0, le=10)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Epsilon = Annotated[float, Field(gt=0, le=1)]


class Sgd(Body):
    name: Literal["sgd"]
    learning_rate: LearningRate = 0.01


class Momentum(Body):
    name: Literal["momentum"]
    learning_rate: LearningRate = 0.01
    beta: Beta = 0.9


class RmsProp(Body):
    name: Literal["rmsprop"]
    learning_rate: LearningRate = 0.001
    beta: Beta = 0.999
    epsilon: Epsilon = 1e-8


class Adam(Body):
    name: Literal["adam"]
    learning_rate: LearningRate = 0.001
    beta1: Beta = 0.9
    beta2: Beta = 0.999
    epsilon: Epsilon = 1e-8


Optimizer = Annotated[Sgd | Momentum | RmsProp | Adam, Field(discriminator="name")]


class EarlyStopping(Body):
    patience: Annotated[int, Field(ge=1, le=1000)] = 3
    min_delta: Annotated[float, Field(ge=0, le=1e6)] = 0.0


class TrainingSettings(Body):
    epochs: Annotated[int, Field(ge=1, le=1000)] = 5
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    optimizer: Optimizer = Field(default_factory=lambda: Adam(name="adam"))
    validation_split: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop when the validation cost (else the training cost) stalls."
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
    architecture: Architecture | PresetName = Field(
        description="A config, or a preset name that adapts to the dataset's input and classes."
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


class EpochMetrics(BaseModel):
    epoch: int
    cost: float | None
    train_accuracy: float | None
    val_cost: float | None
    val_accuracy: float | None
    seconds: float | None


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


class IterationCost(BaseModel):
    epoch: int
    iteration: int
    cost: float | None


class CostHistory(BaseModel):
    status: JobStatus
    iterations: list[IterationCost]
    epochs: list[EpochMetrics]
    last_iteration: int = Field(description="Pass as `since` to get only newer points.")


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


class ModelMetrics(BaseModel):
    epochs_trained: int
    stopped_early: bool
    cost: float | None
    train_accuracy: float | None
    val_cost: float | None
    val_accuracy: float | None


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
Row = Annotated[list[float], Field(fail_fast=True)]
Plane = Annotated[list[Row], Field(fail_fast=True)]
Instance = Annotated[list[Plane], Field(fail_fast=True)]


class PredictInstances(Body):
    """Inputs already in the model's scale (as its training X), each (C, H, W)."""

    instances: Annotated[list[Instance], Field(min_length=1, fail_fast=True)]


class ClassScore(BaseModel):
    label: int
    class_name: str
    probability: float


class Prediction(ClassScore):
    top_k: list[ClassScore]


class Predictions(BaseModel):
    model_id: str
    predictions: list[Prediction]


class WorkerStatus(BaseModel):
    workers: int
    running: int
    queued: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    jobs: WorkerStatus
    problems: list[str] = Field(
        description="Stored records that cannot be read, skipped until they are fixed or "
        "removed (paths relative to the data directory)."
    )


class Error(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidInput(BaseModel):
    detail: str | list[ValidationIssue]


ERROR_DESCRIPTIONS = {
    400: "Input that cannot be decoded",
    401: "Missing or invalid API key",
    403: "Cross-origin request refused (a web page may not change data here)",
    404: "Not found",
    409: "Conflicts with the resource's state",
    413: "Body or image over the size limit",
    415: "Unsupported file format",
    422: "Invalid input; the message names the problem",
    429: "Job queue full; retry later",
    503: "Too many predictions in flight; retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return."""
    return {
        code: {
            "model": InvalidInput if code == 422 else Error,
            "description": ERROR_DESCRIPTIONS[code],
        }
        for code in codes
    }


def errors_as_json(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with every 4xx/5xx response documented as JSON, as it is sent: FastAPI files the
    error models of a streaming route under that route's media type (text/event-stream)."""
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[0] in "45" and "text/event-stream" in content:
                    content.setdefault("application/json", content.pop("text/event-stream"))
    return spec
