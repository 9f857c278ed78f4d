"""The job runner: admits jobs to a bounded FIFO queue, starts them on free workers, settles
workers that end, and repairs the data directory at startup.

It runs as one asyncio task in the server whose every round (`_tick`: SQLite, the file system,
starting processes) runs in a thread, never on the event loop. It wakes on every submission and
cancellation and otherwise polls the executor every `poll_interval` seconds, so a worker that
dies is noticed within that time: its job fails with the reason and the next job starts.

When the server stops, `begin_shutdown` records a stop request for each job its executor runs
(the workers checkpoint at the iteration they read it, within a second) and no further job
starts; their jobs go back to the queue and resume on the next start. A worker that has not
stopped `STOP_GRACE_SECONDS` later is killed; its job resumes from its last epoch checkpoint
instead.
"""

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from app.errors import ConflictError, QueueFullError, not_found
from app.ids import new_id
from app.schemas import WorkerStatus
from app.storage.datasets import DatasetStore
from app.storage.integrity import quarantine
from app.storage.jobs import JobRecord, JobStatus, JobStore
from app.storage.layout import DataLayout
from app.storage.models import ModelStore
from app.training.executor import JobExecutor
from app.training.outcomes import Outcome, OutcomeKind, log_end

log = logging.getLogger("app.runner")

STOP_GRACE_SECONDS = 5.0


class JobRunner:
    """Owns the queue discipline: at most `workers` jobs run, at most `max_queue` wait."""

    def __init__(
        self,
        jobs: JobStore,
        datasets: DatasetStore,
        models: ModelStore,
        executor: JobExecutor,
        layout: DataLayout,
        *,
        workers: int,
        max_queue: int,
        poll_interval: float,
        train_threads: int,
    ) -> None:
        self.jobs = jobs
        self.datasets = datasets
        self.models = models
        self.executor = executor
        self.workers = workers
        self._layout = layout
        self._max_queue = max_queue
        self._poll_interval = poll_interval
        self._train_threads = train_threads
        self._stop_deadline: float | None = None
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_closing = False
        self._started: dict[str, float] = {}  # job id -> when its run started (monotonic)

    # ------------------------------------------------------------------ called from routes

    def submit(
        self,
        *,
        name: str | None,
        dataset_id: str,
        architecture: dict[str, Any],
        training: dict[str, Any],
    ) -> JobRecord:
        """Queue an admitted job; 429 when the queue is full."""
        with self._lock:  # against a dataset deleted meanwhile through this server
            if self.datasets.get(dataset_id) is None:
                raise not_found("dataset", dataset_id)
            job = self.jobs.create(
                new_id(),
                name,
                dataset_id,
                architecture,
                training,
                threads=self._train_threads,
                max_queued=self._max_queue,  # the bound holds across servers sharing the store
            )
        if job is None:
            raise QueueFullError(f"Job queue full ({self._max_queue} jobs queued); retry later")
        self.wake()
        return job

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job (idempotent); 409 once it has finished."""
        return self._cancel_in_store(job_id, kill=self.executor.kill)

    def _cancel_in_store(self, job_id: str, kill: Callable[[str], None] | None = None) -> JobRecord:
        """Cancel the job in the store, then `kill` its run if it was running."""
        with self._lock:
            before = self.jobs.cancel(job_id)
            if before is JobStatus.running and kill is not None:
                kill(job_id)
        if before in (JobStatus.succeeded, JobStatus.failed):
            raise ConflictError(f"Job already finished (status: {before})")
        self.wake()
        return self.jobs.get(job_id)

    def status(self) -> WorkerStatus:
        """How many jobs run (at most `workers`) and wait."""
        return WorkerStatus(
            executor="local",
            workers=self.workers,
            running=len(self.executor.running()),
            queued=self.jobs.count(JobStatus.queued),
        )

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset no queued or running job uses; 409 otherwise."""
        with self._lock:
            if self.jobs.is_dataset_in_use(dataset_id):
                raise ConflictError(f"Dataset {dataset_id!r} is used by a queued or running job")
            self.datasets.delete(dataset_id)

    def wake(self) -> None:
        """Make the loop look at the queue now (safe from any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Start and settle jobs until `stop_loop`; each round runs in a thread."""
        self._loop = asyncio.get_running_loop()
        while not self._loop_closing:
            try:
                await asyncio.to_thread(self._tick)
            except Exception:
                log.exception("job runner tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    def stop_loop(self) -> None:
        """Make `run` return after the round in progress (not cancelled mid-round, so no
        thread is left using the stores once `run` has returned)."""
        self._loop_closing = True
        self.wake()

    def _tick(self) -> None:
        for job_id, outcome in self.executor.reap():
            self._settle(job_id, outcome)
        with self._lock:
            while not self.stopping and len(self.executor.running()) < self.workers:
                job_id = self.jobs.claim_next()
                if job_id is None:
                    break
                self.executor.start(job_id)
                self._started[job_id] = time.monotonic()
                log.info("job %s started", job_id)

    def _settle(self, job_id: str, outcome: Outcome) -> None:
        """Clean up after a run: re-queue its job if it stopped at a checkpoint on request,
        fail it if its worker died, drop leftovers; log how it ended."""
        self._log_end(job_id, outcome)
        if outcome.kind is OutcomeKind.interrupted and self.jobs.requeue(job_id):
            return
        if outcome.kind is OutcomeKind.died:
            self.jobs.finish(job_id, JobStatus.failed, error=outcome.reason)
        job = self.jobs.get(job_id)
        if not job.status.is_active:
            self._discard_unpublished(job)
            self._layout.remove_checkpoints(job_id)  # and the temp files of a killed writer

    def _log_end(self, job_id: str, outcome: Outcome) -> None:
        seconds = time.monotonic() - self._started.pop(job_id, time.monotonic())
        log_end(log, job_id, outcome, seconds, self.jobs.get(job_id))

    def _discard_unpublished(self, job: JobRecord) -> None:
        for model in self.models.list_all():
            if model.job_id == job.id and model.id != job.model_id:
                self.models.delete(model.id)

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down (no job starts any more)."""
        return self._stop_deadline is not None

    def begin_shutdown(self) -> None:
        """Start no more jobs and ask the workers to checkpoint and stop (idempotent)."""
        with self._lock:  # a round starting a job either precedes this or sees `stopping`
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
                for job_id in self.executor.running():
                    self.jobs.request_stop(job_id)

    def shutdown(self) -> None:
        """Stop every worker, within the grace period: jobs checkpointed at their current
        iteration go back to the queue, the others stay `running` and resume from their last
        checkpoint on the next start."""
        self.begin_shutdown()
        for job_id, outcome in self.executor.shutdown(self._stop_deadline):
            self._log_end(job_id, outcome)
            if outcome.kind is OutcomeKind.interrupted:
                self.jobs.requeue(job_id)

    # ------------------------------------------------------------------ startup

    def recover(self) -> None:
        """Repair what a crash may have left: re-queue interrupted jobs, quarantine models a
        job replaced (a worker that died between publishing and recording its model), delete
        checkpoints of finished jobs. Nothing is removed because a job row is absent: a
        database restored from a backup without its WAL, or lost, must not cost the models
        (they stay served) or the checkpoints (they are quarantined)."""
        requeued = self.jobs.requeue_running()
        if requeued:
            log.info(
                "re-queued %d interrupted job(s); they resume from their checkpoints", len(requeued)
            )
        for model in self.models.list_all():
            job = self.jobs.get(model.job_id)
            if job is not None and job.model_id != model.id:
                self.models.quarantine(model.id, f"job {job.id} does not name this model")
        for checkpoint in self._layout.checkpoints.glob("*.npz"):
            job = self.jobs.get(self._layout.checkpoint_job(checkpoint))
            if job is None:
                quarantine(checkpoint, self._layout.quarantine / "checkpoints", "no such job")
            elif not job.status.is_active:
                checkpoint.unlink(missing_ok=True)


def begin_shutdown_on_exit_signals(runner: JobRunner) -> None:
    """Chain `runner.begin_shutdown` onto the server's SIGTERM and SIGINT handlers.

    The workers then start checkpointing the moment the server is told to stop, while it still
    drains its connections: uvicorn runs the lifespan shutdown only after that, up to its
    graceful-shutdown timeout later. Servers install their handlers in the main thread before
    the lifespan starts; elsewhere (a TestClient) there is nothing to chain onto.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(signum: int, frame: object, previous=previous) -> None:
            # In a thread: begin_shutdown waits for a round of the runner that may be starting
            # a job, which the event loop must not do.
            loop.call_soon_threadsafe(loop.run_in_executor, None, runner.begin_shutdown)
            previous(signum, frame)

        signal.signal(signum, handler)
