"""Submit, follow and cancel training jobs."""

import asyncio
import time
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from app.deps import DatasetStoreDep, JobDep, JobStoreDep, RunnerDep, SettingsDep
from app.errors import not_found
from app.ids import is_valid_id
from app.openapi import location_header
from app.plotting import cost_curve_png
from app.schemas import (
    MAX_POSITION,
    CostHistory,
    EpochMetrics,
    Job,
    JobCreate,
    JobEvent,
    JobList,
    Progress,
    error_responses,
)
from app.storage.jobs import JobRecord, JobStatus, JobStore
from app.training.admission import admit
from cnn_core.history import EpochSummary, IterationCost

router = APIRouter(prefix="/jobs", tags=["jobs"])

COST_PAGE = 10_000  # iterations in one costs response or event
STREAM_OVERVIEW_POINTS = 1_000  # the history sent on a stream's first connection
PLOT_POINTS = 2_000  # iterations drawn in costs.png


def _time(timestamp: float | None) -> datetime | None:
    """A stored Unix time as an aware UTC datetime."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def _progress(job: JobRecord) -> Progress:
    """Where `job` is. The ETA extrapolates the pace of the current run only: iterations a
    resumed job did before its restart took no time in it."""
    epochs = job.training["epochs"]
    per_epoch = job.iterations_per_epoch
    total = per_epoch * epochs if per_epoch else None
    fraction = min(job.iteration / total, 1.0) if total else 0.0
    eta = None
    done_this_run = job.iteration - job.run_start_iteration
    if job.status is JobStatus.running and total and job.run_started_at and done_this_run > 0:
        eta = (time.time() - job.run_started_at) / done_this_run * max(total - job.iteration, 0)
    return Progress(
        epoch=job.epoch,
        epochs=epochs,
        iteration=job.iteration,
        iterations_per_epoch=per_epoch,
        total_iterations=total,
        fraction=1.0 if job.status is JobStatus.succeeded else fraction,
        eta_seconds=eta,
    )


def job_out(job: JobRecord) -> Job:
    """The API view of a job record."""
    return Job(
        id=job.id,
        name=job.name,
        status=job.status,
        dataset_id=job.dataset_id,
        architecture=job.architecture,
        training=job.training,
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        queue_position=job.queue_position,
        progress=_progress(job),
        metrics=EpochMetrics.model_validate(job.latest, from_attributes=True)
        if job.latest
        else None,
        error=job.error,
        model_id=job.model_id,
    )


def summarized_only(
    iterations: list[IterationCost], epochs: list[EpochSummary], per_epoch: int
) -> list[IterationCost]:
    """`iterations` up to the first epoch end whose summary is not stored yet. A worker stores
    an epoch's last costs, then its summary: a reader between the two writes would otherwise
    move its cursor (`since`, the events' id) past the epoch, and never see its summary. (Only
    the newest points can be held back: the next epoch's costs come after the summary.)"""
    summarized = {e.epoch for e in epochs}
    for n, point in enumerate(iterations):
        if point.iteration % per_epoch == 0 and point.epoch not in summarized:
            return iterations[:n]
    return iterations


def cost_history(
    jobs: JobStore, job: JobRecord, since: int, max_points: int | None = None
) -> CostHistory:
    """`job`'s status and its costs after iteration `since`: at most `COST_PAGE` iterations
    (`complete` false when more follow `last_iteration`), or the whole range thinned to
    `max_points`, each epoch's summary together with its last iteration. The record must have
    been read before the costs are: then a finished status comes with the complete history."""
    rows, epochs = jobs.costs(job.id, since, max_points=max_points, limit=COST_PAGE + 1)
    complete = len(rows) <= COST_PAGE
    iterations = rows[:COST_PAGE]
    if job.status.is_active and job.iterations_per_epoch:
        iterations = summarized_only(iterations, epochs, job.iterations_per_epoch)
    last = iterations[-1].iteration if iterations else since
    if not complete:
        epochs = [e for e in epochs if e.last_iteration <= last]
    return CostHistory(
        status=job.status,
        iterations=iterations,
        epochs=[EpochMetrics.model_validate(e, from_attributes=True) for e in epochs],
        last_iteration=last,
        complete=complete,
    )


@router.post(
    "",
    status_code=202,
    response_model=Job,
    responses={
        202: {"description": "The job, queued", "headers": location_header("job")},
        **error_responses(404, 422, 429),
    },
)
def create_job(
    body: JobCreate,
    datasets: DatasetStoreDep,
    runner: RunnerDep,
    settings: SettingsDep,
    response: Response,
) -> Job:
    """Submit a training job; it is checked against its dataset, then queued."""
    dataset = datasets.get(body.dataset_id) if is_valid_id(body.dataset_id) else None
    if dataset is None:
        raise not_found("dataset", body.dataset_id)
    architecture, training = admit(body, dataset, settings.worker_memory_mb)
    job = runner.submit(
        name=body.name, dataset_id=dataset.id, architecture=architecture, training=training
    )
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_out(job)


@router.get("", response_model=JobList)
def list_jobs(
    jobs: JobStoreDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> JobList:
    """Jobs, newest first, optionally only those with one status."""
    records, total = jobs.list_page(status, limit, offset)
    return JobList(jobs=[job_out(r) for r in records], count=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=Job, responses=error_responses(404))
def read_job(job: JobDep) -> Job:
    """One job: status, progress (epoch, iteration, fraction, ETA), latest metrics, model."""
    return job_out(job)


@router.get("/{job_id}/costs", response_model=CostHistory, responses=error_responses(404))
def read_job_costs(
    job: JobDep,
    jobs: JobStoreDep,
    since: Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="Only iterations after this one.")
    ] = 0,
    max_points: Annotated[
        int | None, Query(ge=2, le=COST_PAGE, description="Thin the iterations to this many.")
    ] = None,
) -> CostHistory:
    """The cost of each iteration after `since` (at most 10,000 per response: page on with
    `since=last_iteration` while `complete` is false, or thin with `max_points`) and the
    summary of every epoch. Long histories are stored thinned: the most recent 10,000
    iterations in full, older ones at a coarser spacing (at most 20,000 per job)."""
    return cost_history(jobs, job, since, max_points)


@router.get(
    "/{job_id}/costs.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The cost curve"},
        **error_responses(404),
    },
)
def read_job_cost_plot(job: JobDep, jobs: JobStoreDep) -> Response:
    """The cost curve as a PNG image."""
    iterations, epochs = jobs.costs(job.id, 0, max_points=PLOT_POINTS)
    title = job.name or f"job {job.id}"
    png = cost_curve_png(iterations, epochs, job.training["optimizer"]["learning_rate"], title)
    return Response(png, media_type="image/png")


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"model": JobEvent, "description": "`costs`, `progress` and `end` events"},
        **error_responses(404, 422),
    },
)
async def stream_job_events(
    job: JobDep,
    jobs: JobStoreDep,
    runner: RunnerDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(
            pattern=r"^[0-9]{1,15}$",  # any iteration, and below MAX_POSITION
            description="The `id` of the last `costs` event received: resume after it.",
        ),
    ] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-sent events until the job ends: `costs` (new points), `progress` (the job) and a
    final `end`. Each `costs` event's id is its last iteration, so a reconnecting client
    continues where it stopped (the stream also ends early when the server shuts down). A
    first connection (no `Last-Event-ID`) gets the history so far thinned to 1,000 points,
    then every new point; a reconnection gets the points after its last event, in pages."""
    since = int(last_event_id or 0)
    overview = STREAM_OVERVIEW_POINTS if last_event_id is None else None
    shown = None
    while True:
        record = await run_in_threadpool(jobs.get, job.id)
        history = await run_in_threadpool(cost_history, jobs, record, since, overview)
        overview = None
        if history.iterations or history.epochs:
            since = history.last_iteration
            yield ServerSentEvent(event="costs", id=str(since), data=history)
        if not history.complete:
            continue  # the next page at once
        state = job_out(record)
        if not record.status.is_active:
            yield ServerSentEvent(event="end", data=state)
            return
        if (record.status, record.iteration, record.latest) != shown:
            shown = (record.status, record.iteration, record.latest)
            yield ServerSentEvent(event="progress", data=state)
        if runner.stopping:
            return
        await asyncio.sleep(settings.poll_interval)


@router.post("/{job_id}/cancel", response_model=Job, responses=error_responses(403, 404, 409))
def cancel_job(job: JobDep, runner: RunnerDep) -> Job:
    """Cancel a queued or running job; cancelling a cancelled job is a no-op."""
    return job_out(runner.cancel(job.id))
