"""The job domain: a job's status, its record, its cost history, and what a job store must do.

`JobStore` is the interface the API, the runner and the workers use; `open_job_store` (in
`app.storage.stores`) picks the implementation the settings name. Any implementation must
guarantee, for every process that shares it (the server and any number of workers):

- Status transitions: queued -> running -> succeeded | failed | cancelled, and queued ->
  cancelled. Terminal states never change; every transition is atomic, so of two processes
  racing (a worker finishing, a user cancelling) exactly one wins.
- A `running` job goes back to `queued`, at its old place in the queue, when its worker stopped
  to be resumed later (a stop request, the server shutting down) or was left running by a
  previous server boot; it resumes from its checkpoint.
- `claim_next` hands each queued job to one caller only, oldest first.
- Requests to a running job (cancel, stop) are recorded in the store, so a worker on any
  machine sees them when it next reads its job.
- Costs are keyed by iteration and summaries by epoch: writing one again replaces it, so a run
  resumed from a checkpoint can redo what a killed run had already recorded.
- Every claim starts a new `attempt`. A worker's writes name their attempt and change nothing
  once another claim has taken the job over (its worker was presumed dead after its lease ran
  out), so a worker that was only cut off can never overwrite the run that replaced it.
- Retention: every epoch summary is kept; of the iteration costs, the most recent
  `RECENT_ITERATIONS` are kept at full resolution and older ones are thinned (every other one
  dropped, the first kept) whenever a job holds more than `MAX_STORED_ITERATIONS`, so a
  job's stored history, and every read of it, stays bounded however long it trains.
- `costs` thins and pages in the store (the caller never loads rows it will not return).
"""

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from cnn_core.history import EpochSummary, IterationCost

MAX_STORED_ITERATIONS = 20_000
RECENT_ITERATIONS = 10_000


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_active(self) -> bool:
        """Queued or running."""
        return self in (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str | None
    dataset_id: str
    architecture: dict[str, Any]
    training: dict[str, Any]
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    epoch: int = 0
    iteration: int = 0
    iterations_per_epoch: int | None = None
    run_started_at: float | None = None
    run_start_iteration: int = 0
    error: str | None = None
    model_id: str | None = None
    threads: int | None = None
    stop_requested: bool = False
    queue_position: int | None = None
    latest: EpochSummary | None = None
    attempt: int = 0
    worker: str | None = None
    lease_expires_at: float | None = None
    lease_losses: int = 0


class JobStore(Protocol):
    """What the service needs from a job store (the guarantees are in the module docstring)."""

    def create(
        self,
        job_id: str,
        name: str | None,
        dataset_id: str,
        architecture: dict[str, Any],
        training: dict[str, Any],
        threads: int,
        *,
        max_queued: int | None = None,
    ) -> JobRecord | None: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def list_page(
        self, status: JobStatus | None, limit: int, offset: int
    ) -> tuple[list[JobRecord], int]: ...
    def count(self, status: JobStatus) -> int: ...
    def is_dataset_in_use(self, dataset_id: str) -> bool: ...
    def claim_next(self) -> str | None: ...
    def cancel(self, job_id: str) -> JobStatus | None: ...
    def request_stop(self, job_id: str) -> bool: ...
    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        model_id: str | None = None,
        attempt: int | None = None,
    ) -> bool: ...
    def requeue(self, job_id: str, attempt: int | None = None) -> bool: ...
    def requeue_running(self) -> list[str]: ...
    def start_run(
        self,
        job_id: str,
        epoch: int,
        iteration: int,
        iterations_per_epoch: int,
        attempt: int | None = None,
    ) -> bool: ...
    def record_iterations(
        self, job_id: str, rows: list[IterationCost], attempt: int | None = None
    ) -> bool: ...
    def record_epoch(
        self, job_id: str, summary: EpochSummary, attempt: int | None = None
    ) -> bool: ...
    def costs(
        self, job_id: str, since: int, *, max_points: int | None = None, limit: int | None = None
    ) -> tuple[list[IterationCost], list[EpochSummary]]: ...
    def close(self) -> None: ...


def finite_or_none(value: Any) -> float | None:
    """`value` as a Python float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
