"""Dependencies: what a route needs, as `Annotated` aliases, so its signature reads as its needs.

The `existing_*` dependencies turn an id that fails the allowlist, or that no store knows, into
a 404 before the route runs (and before anything touches the file system).

Dependencies that only read what is in memory are `async def`: FastAPI runs a plain `def`
dependency in the threadpool, and a hand-off to a thread and back costs more than the lookup
(tens of microseconds idle, far more when training keeps the cores busy). Those that may touch
the disk or the database stay plain functions.
"""

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from app.errors import NotFoundError, not_found
from app.ids import is_valid_id
from app.inference import Predictor
from app.settings import Settings
from app.storage.datasets import DatasetMeta, DatasetStore
from app.storage.integrity import Problems
from app.storage.jobs import JobRecord, JobStore
from app.storage.models import ModelMeta, ModelStore
from app.training.runner import JobRunner


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


async def get_runner(request: Request) -> JobRunner:
    """The job runner created at startup."""
    return request.app.state.runner


async def get_predictor(request: Request) -> Predictor:
    """The predictor created at startup."""
    return request.app.state.predictor


async def get_problems(request: Request) -> Problems:
    """The unreadable records found since startup."""
    return request.app.state.problems


SettingsDep = Annotated[Settings, Depends(get_settings)]
ProblemsDep = Annotated[Problems, Depends(get_problems)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]


async def get_job_store(runner: RunnerDep) -> JobStore:
    """The job store."""
    return runner.jobs


async def get_dataset_store(runner: RunnerDep) -> DatasetStore:
    """The dataset store."""
    return runner.datasets


async def get_model_store(runner: RunnerDep) -> ModelStore:
    """The model store."""
    return runner.models


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]
ModelStoreDep = Annotated[ModelStore, Depends(get_model_store)]


def existing_job(job_id: str, jobs: JobStoreDep, models: ModelStoreDep) -> JobRecord:
    """The job named in the path, or 404 (saying which job trained it, for a model's id)."""
    job = jobs.get(job_id) if is_valid_id(job_id) else None
    if job is None:
        model = models.get(job_id) if is_valid_id(job_id) else None
        if model is not None:
            raise NotFoundError(
                f"{job_id!r} is a model, not a job: it was trained by job {model.job_id!r}"
            )
        raise not_found("job", job_id)
    return job


def existing_dataset(dataset_id: str, datasets: DatasetStoreDep) -> DatasetMeta:
    """The dataset named in the path, or 404."""
    dataset = datasets.get(dataset_id) if is_valid_id(dataset_id) else None
    if dataset is None:
        raise not_found("dataset", dataset_id)
    return dataset


async def existing_model(model_id: str, models: ModelStoreDep, jobs: JobStoreDep) -> ModelMeta:
    """The model named in the path, or 404 (saying which model it produced, for a job's id);
    from memory once the model has been read (each prediction looks it up), from its file in
    the threadpool the first time."""
    model = None
    if is_valid_id(model_id):
        model = models.cached(model_id) or await run_in_threadpool(models.get, model_id)
    if model is None:
        raise await run_in_threadpool(_model_not_found, model_id, jobs)
    return model


def _model_not_found(model_id: str, jobs: JobStore) -> NotFoundError:
    """The 404 for `model_id`, naming the model it produced when it is a job's id."""
    job = jobs.get(model_id) if is_valid_id(model_id) else None
    if job is not None and job.model_id:
        return NotFoundError(
            f"{model_id!r} is a job, not a model: it produced model {job.model_id!r}"
        )
    if job is not None:
        when = "yet " if job.status.is_active else ""
        return NotFoundError(
            f"{model_id!r} is a job, not a model, and it has produced no model "
            f"{when}(status {job.status})"
        )
    return not_found("model", model_id)


JobDep = Annotated[JobRecord, Depends(existing_job)]
DatasetDep = Annotated[DatasetMeta, Depends(existing_dataset)]
ModelDep = Annotated[ModelMeta, Depends(existing_model)]
