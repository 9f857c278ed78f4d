"""What the service answers, as typed records.

The names and fields follow the server's OpenAPI schemas (tests/client/test_spec.py checks them
against a live server). Every record ignores fields it does not know, so a server that grows
new fields keeps working with an older client.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """Base of every response record: unknown fields are dropped, not refused."""

    model_config = ConfigDict(extra="ignore")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_active(self) -> bool:
        """Still queued or running: the job has not reached its outcome yet."""
        return self in (JobStatus.queued, JobStatus.running)


class WorkerStatus(Record):
    workers: int
    running: int
    queued: int


class Health(Record):
    status: Literal["ok"]
    version: str
    jobs: WorkerStatus


class LayerSummary(Record):
    index: int
    type: str
    output_shape: list[int]
    param_count: int
    macs: int


class ArchitectureSummary(Record):
    architecture: dict[str, Any]
    input_shape: list[int]
    n_classes: int
    layers: list[LayerSummary]
    param_count: int
    macs: int


class Dataset(Record):
    id: str
    name: str
    n_samples: int
    input_shape: list[int]
    classes: list[str]
    class_counts: dict[str, int]
    preprocessing: dict[str, Any]
    builtin: bool
    created_at: datetime


class DatasetList(Record):
    datasets: list[Dataset]
    count: int


class Progress(Record):
    epoch: int
    epochs: int
    iteration: int
    iterations_per_epoch: int | None
    total_iterations: int | None
    fraction: float
    eta_seconds: float | None


class EpochMetrics(Record):
    epoch: int
    cost: float | None
    train_accuracy: float | None
    val_cost: float | None
    val_accuracy: float | None
    seconds: float | None


class Job(Record):
    id: str
    name: str | None
    status: JobStatus
    dataset_id: str
    architecture: dict[str, Any]
    training: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None
    progress: Progress
    metrics: EpochMetrics | None
    error: str | None
    model_id: str | None


class JobList(Record):
    jobs: list[Job]
    count: int
    limit: int
    offset: int


class IterationCost(Record):
    epoch: int
    iteration: int
    cost: float | None


class CostHistory(Record):
    status: JobStatus
    iterations: list[IterationCost]
    epochs: list[EpochMetrics]
    last_iteration: int
    complete: bool = True  # False: more points follow `last_iteration` (ask again from there)


class ModelMetrics(Record):
    epochs_trained: int
    stopped_early: bool
    cost: float | None
    train_accuracy: float | None
    val_cost: float | None
    val_accuracy: float | None


class Model(Record):
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
    training: dict[str, Any]


class ModelList(Record):
    models: list[Model]
    count: int


class ClassScore(Record):
    label: int
    class_name: str
    probability: float


class Prediction(ClassScore):
    top_k: list[ClassScore]
    filename: str | None = None
    inverted: bool | None = None


class Predictions(Record):
    model_id: str
    predictions: list[Prediction]


class ClassReport(Record):
    class_name: str
    precision: float
    recall: float
    f1: float
    support: int


class Evaluation(Record):
    n_samples: int
    accuracy: float
    classes: list[str]
    confusion_matrix: list[list[int]]
    per_class: list[ClassReport]


class CostsEvent(Record):
    """New cost points; `id` is the last iteration in them (what Last-Event-ID resumes from)."""

    event: Literal["costs"] = "costs"
    id: int
    data: CostHistory


class ProgressEvent(Record):
    """The job, whenever its status, iteration or latest metrics changed."""

    event: Literal["progress"] = "progress"
    data: Job


class EndEvent(Record):
    """The job in its final state; the stream ends after it."""

    event: Literal["end"] = "end"
    data: Job


JobEvent = CostsEvent | ProgressEvent | EndEvent
