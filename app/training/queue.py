"""The server's side of training on many machines (`CNN_REDIS_URL` set): `QueueRunner`.

The server trains nothing itself. Submitting queues the job in the database (the bound checked
there, so it holds across replicas) and puts a call on the RQ queue; `make worker` processes
take the calls and claim jobs from the database (`app.training.rq_worker`). Every replica's
loop also keeps the queue honest, every `RECONCILE_SECONDS`, whichever replica gets there
first (each step is one atomic statement, so replicas never do it twice):
- jobs whose worker's lease ran out go back to the queue (or fail after `MAX_LEASE_LOSSES`);
- Redis gets a call for every queued job it lacks one for: after a Redis restart or loss, and
  after a call was lost between Redis and a worker, the database re-enqueues them.

A replica that stops leaves the jobs alone: they belong to the workers.
"""

import contextlib
import logging
import time

import redis

from app.schemas import LiveWorkerOut, WorkerStatus
from app.storage.datasets import DatasetStore
from app.storage.jobs import JobRecord, JobStatus
from app.storage.layout import DataLayout
from app.storage.models import ModelStore
from app.storage.sql_jobs import SqlJobStore
from app.training.rq_worker import LEASE_SECONDS, MAX_LEASE_LOSSES, enqueue_calls, training_queue
from app.training.runner import JobRunner

log = logging.getLogger("app.queue")

RECONCILE_SECONDS = 1.0
LIVE_WITHIN = 3 * 1.0 + 2  # a worker missing three beats (of rq_worker.RENEW_SECONDS) is gone


class QueueRunner(JobRunner):
    """`JobRunner` for many machines: admits jobs and reconciles the queue; workers train."""

    def __init__(
        self,
        jobs: SqlJobStore,
        datasets: DatasetStore,
        models: ModelStore,
        layout: DataLayout,
        *,
        redis_url: str,
        max_queue: int,
        poll_interval: float,
        train_threads: int,
    ) -> None:
        super().__init__(
            jobs,
            datasets,
            models,
            None,
            layout,
            workers=0,
            max_queue=max_queue,
            poll_interval=poll_interval,
            train_threads=train_threads,
        )
        self.queue = training_queue(redis_url)
        self._next_reconcile = 0.0

    def submit(self, **job: object) -> JobRecord:
        """Queue an admitted job and call a worker for it (Redis being away delays the call
        until the next reconcile, never the job)."""
        record = super().submit(**job)
        with contextlib.suppress(redis.RedisError):
            enqueue_calls(self.queue, 1)
        return record

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel in the database; the worker training it reads that within half a second."""
        return self._cancel_in_store(job_id)

    def _tick(self) -> None:
        if time.monotonic() < self._next_reconcile:
            return
        self._next_reconcile = time.monotonic() + RECONCILE_SECONDS
        requeued, failed = self.jobs.expire_leases(MAX_LEASE_LOSSES)
        for job_id in requeued:
            log.warning("job %s: its worker's lease ran out; back in the queue", job_id)
        for job_id in failed:
            log.warning("job %s failed: its workers were lost %d times", job_id, MAX_LEASE_LOSSES)
        try:
            missing = self.jobs.count(JobStatus.queued) - self.queue.count
            if missing > 0:
                enqueue_calls(self.queue, missing)
                log.info("re-enqueued %d call(s) for queued jobs", missing)
        except redis.RedisError as exc:
            log.warning("Redis unreachable (%s); queued jobs wait in the database", exc)

    def begin_shutdown(self) -> None:
        """Stop following the queue; running jobs carry on on their workers."""
        with self._lock:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic()

    def shutdown(self) -> None:
        self.begin_shutdown()
        self.queue.connection.close()

    def recover(self) -> None:
        """Quarantine models a crashed publication left behind: those of a job that has ended
        naming another model. A terminal state never changes, so the decision holds whichever
        replica makes it, and whenever; a running job's worker may be publishing its model
        right now, so its models are left alone. A model whose job row is absent (a database
        lost or restored from an older backup) stays served, as in the embedded mode."""
        for model in self.models.list_all():
            job = self.jobs.get(model.job_id)
            if job is not None and not job.status.is_active and job.model_id != model.id:
                self.models.quarantine(model.id, f"job {job.id} does not name this model")

    def status(self) -> WorkerStatus:
        """Queue, running jobs and live workers, as the database has them."""
        running, _ = self.jobs.list_page(JobStatus.running, 500, 0)
        by_worker = {job.worker: job.id for job in running}
        live = self.jobs.live_workers(within=max(LIVE_WITHIN, LEASE_SECONDS / 2))
        return WorkerStatus(
            executor="rq",
            workers=len(live),
            running=len(running),
            queued=self.jobs.count(JobStatus.queued),
            live_workers=[
                LiveWorkerOut(name=w.name, seen_at=w.seen_at, job_id=by_worker.get(w.name))
                for w in live
            ],
        )
