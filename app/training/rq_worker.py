"""`make worker`: one RQ worker that trains the jobs queued in the job database.

The database is the truth about jobs; Redis only carries wake-up calls. Each RQ job on the
`cnn-training` queue says "train the oldest queued job": the work-horse RQ forks for it claims
that job in the database (`SqlJobStore.claim`, so FIFO holds however many servers submit and
however many workers take), trains it with `worker.run_job`, and settles its outcome itself. A
call that finds nothing queued ends at once, so a lost call costs nothing but a job waiting for
the next one, and an extra call costs a fork: the servers re-enqueue calls from the database
(`app.training.queue`) whenever Redis holds fewer than there are queued jobs.

What RQ does not do, this module does:
- A lease in the database, renewed every `RENEW_SECONDS` by a thread of the work-horse. A
  worker host that dies stops renewing it and the servers' sweep re-queues the job within
  `LEASE_SECONDS` (RQ's own sweep takes minutes); it resumes from its checkpoint elsewhere.
  The horse dies with the worker (`PR_SET_PDEATHSIG`), and a horse that was only cut off is
  fenced out by its attempt number (see `app.storage.jobs`).
- A cancel reaches the horse through the database (it reads its job every half second); a
  horse that has lost its job and not ended `ABANDON_SECONDS` later exits by itself.
- SIGTERM (`docker stop`): RQ's warm shutdown waits for the horse, so the worker forwards a
  SIGUSR1 to it; the horse records a stop request for its job, which checkpoints at the
  iteration it reached, goes back to the queue and resumes on another worker. A second SIGTERM
  kills the horse (RQ's cold shutdown); the job then resumes from its last epoch checkpoint.
- Its liveness in the `workers` table (for `GET /health`), every `RENEW_SECONDS`.
- A stop that ends the worker within about a second of its horse: RQ's wait for its pubsub
  thread is bounded (`TrainingWorker.unsubscribe`).
- Redis going away (a restart): the worker keeps running and reconnects; nothing it needs is in
  Redis.
"""

import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading
import time

import redis
from rq import Queue, Worker

from app.settings import Settings
from app.storage.integrity import Problems
from app.storage.layout import DataLayout
from app.storage.sql_jobs import Claim, SqlJobStore
from app.storage.stores import open_job_store, open_model_store
from app.training.executor import WORKER_NICENESS, limit_memory
from app.training.outcomes import Outcome, OutcomeKind, log_end
from app.training.worker import run_job

log = logging.getLogger("app.rq_worker")

QUEUE_NAME = "cnn-training"
LEASE_SECONDS = 10.0
RENEW_SECONDS = 1.0
ABANDON_SECONDS = 3.0
MAX_LEASE_LOSSES = 3
PUBSUB_STOP_SECONDS = 1.0
TASK = "app.training.rq_worker.train_next"

_PR_SET_PDEATHSIG = 1
_stop_requested = threading.Event()  # set in the work-horse by the worker's SIGUSR1
_wake_keeper = threading.Event()  # and the lease keeper acts on it at once


def training_queue(redis_url: str) -> Queue:
    """The RQ queue of training calls on `redis_url`."""
    return Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url))


def enqueue_calls(queue: Queue, count: int) -> None:
    """Put `count` calls to train the oldest queued job on `queue`."""
    for _ in range(count):
        # No time limit (-1; None would mean RQ's 180 s), and no result kept: the database has it.
        queue.enqueue(TASK, job_timeout=-1, result_ttl=0, failure_ttl=24 * 3600)


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent (the worker) dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LeaseKeeper(threading.Thread):
    """Renews a claim's lease and the worker's liveness; forwards a stop request from the
    worker to the job; ends the horse once the job is no longer its own and it has not ended."""

    def __init__(self, jobs: SqlJobStore, claim: Claim, worker: str) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self._jobs, self._claim, self._worker = jobs, claim, worker
        self._done = threading.Event()

    def run(self) -> None:
        stop_forwarded = False
        while True:
            _wake_keeper.wait(RENEW_SECONDS)
            _wake_keeper.clear()
            if self._done.is_set():
                return
            try:
                if _stop_requested.is_set() and not stop_forwarded:
                    log.info("job %s: stopping at this iteration", self._claim.job_id)
                    stop_forwarded = self._jobs.request_stop(self._claim.job_id) or True
                self._jobs.worker_seen(self._worker)
                held = self._jobs.renew_lease(
                    self._claim.job_id, self._claim.attempt, LEASE_SECONDS
                )
            except Exception:  # the database is away: the lease may run out, which is right
                log.warning("could not renew the lease of job %s", self._claim.job_id)
                continue
            if not held and self._done.wait(ABANDON_SECONDS) is False:
                log.warning("job %s is no longer this worker's; abandoning it", self._claim.job_id)
                os._exit(1)

    def stop(self) -> None:
        self._done.set()
        _wake_keeper.set()
        self.join()


def settle(jobs: SqlJobStore, settings: Settings, claim: Claim, outcome: Outcome) -> None:
    """What the local runner does when a run ends, done by the horse: re-queue a job stopped
    at a checkpoint, and clean up after a job that has ended."""
    if outcome.kind is OutcomeKind.superseded:
        return  # another worker has the job and its files
    if outcome.kind is OutcomeKind.interrupted and jobs.requeue(claim.job_id, claim.attempt):
        log.info("job %s checkpointed and re-queued", claim.job_id)
        return
    job = jobs.get(claim.job_id)
    if job is not None and not job.status.is_active:
        models = open_model_store(settings, Problems())
        for model in models.list_all():
            if model.job_id == job.id and model.id != job.model_id:
                models.delete(model.id)
        DataLayout(settings.data_dir).remove_checkpoints(job.id)


def train_next() -> str:
    """The RQ task, run in a work-horse: claim the oldest queued job and train it."""
    if _stop_requested.is_set():
        return "worker stopping: nothing claimed"
    settings = Settings()
    worker = os.environ.get("RQ_WORKER_ID", f"{socket.gethostname()}:{os.getppid()}")
    os.nice(WORKER_NICENESS)
    limit_memory(settings.worker_memory_mb)
    jobs = open_job_store(settings)
    try:
        claim = jobs.claim(worker, LEASE_SECONDS)
        if claim is None:
            return "nothing queued"
        log.info("job %s started: attempt %d on %s", claim.job_id, claim.attempt, worker)
        started = time.monotonic()
        keeper = LeaseKeeper(jobs, claim, worker)
        keeper.start()
        try:
            outcome = run_job(claim.job_id, settings, claim.attempt, _stop_requested)
        finally:
            keeper.stop()
        settle(jobs, settings, claim, outcome)
        if outcome.kind is OutcomeKind.interrupted:
            with contextlib.suppress(redis.RedisError):  # else the servers re-enqueue it
                enqueue_calls(training_queue(settings.redis_url), 1)
        seconds = time.monotonic() - started
        log_end(log, claim.job_id, outcome, seconds, jobs.get(claim.job_id))
        return str(outcome.kind)
    finally:
        jobs.close()


def _on_stop_signal(signum: int, frame: object) -> None:
    _stop_requested.set()
    _wake_keeper.set()


class TrainingWorker(Worker):
    """An RQ worker whose horse dies with it, hears SIGTERM as "checkpoint and stop", and
    rides out a Redis restart (see the module docstring)."""

    def __init__(self, *args, jobs: SqlJobStore, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._jobs = jobs
        self._alive_done = threading.Event()

    def setup_work_horse_signals(self) -> None:
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the worker decides (see SIGUSR1)
        signal.signal(signal.SIGUSR1, _on_stop_signal)

    def handle_warm_shutdown_request(self) -> None:
        if self.horse_pid:
            log.info("stop requested: the job checkpoints and goes back to the queue")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.horse_pid, signal.SIGUSR1)

    def heartbeat(self, *args, **kwargs) -> None:
        with contextlib.suppress(redis.ConnectionError):
            super().heartbeat(*args, **kwargs)

    def maintain_heartbeats(self, job) -> None:
        with contextlib.suppress(redis.ConnectionError):
            super().maintain_heartbeats(job)

    def execute_job(self, job, queue) -> None:
        try:
            super().execute_job(job, queue)
        except redis.ConnectionError:  # the call's bookkeeping only: the database has the rest
            log.warning("Redis unreachable while settling call %s", job.id)

    def keep_alive(self) -> None:
        """Record this worker as live every `RENEW_SECONDS` until it stops (a thread)."""

        def beat() -> None:
            while not self._alive_done.wait(RENEW_SECONDS):
                with contextlib.suppress(Exception):
                    self._jobs.worker_seen(self.name)

        self._jobs.worker_seen(self.name)
        threading.Thread(target=beat, name="worker-alive", daemon=True).start()

    def unsubscribe(self) -> None:
        """RQ's, with the wait for its pubsub thread bounded.

        Since redis-py 8.2 the thread's `stop` waits for it to end, and a thread that has seen
        the unsubscribe first can sit out the rest of RQ's 60 s poll: a SIGTERM then took a
        minute to end the worker, past `docker stop`'s grace. The thread is a daemon and ends
        with the process."""
        if self.pubsub_thread:
            self.pubsub.unsubscribe()
            self.pubsub_thread.stop(timeout=PUBSUB_STOP_SECONDS)
            if not self.pubsub_thread.is_alive():
                self.pubsub.close()

    def teardown(self) -> None:
        self._alive_done.set()
        with contextlib.suppress(Exception):
            self._jobs.worker_gone(self.name)
        super().teardown()


def main() -> None:
    """Run one worker until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    if not settings.redis_url:
        raise SystemExit("make worker needs CNN_REDIS_URL (redis://host:port/0)")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    DataLayout(settings.data_dir.resolve()).create()
    jobs = open_job_store(settings, pooled=False)  # no connection open when the horse forks
    queue = training_queue(settings.redis_url)
    name = f"{socket.gethostname()}-{os.getpid()}"
    worker = TrainingWorker(
        [queue],
        connection=queue.connection,
        name=name,
        jobs=jobs,
        job_monitoring_interval=5,
        worker_ttl=30,
    )
    worker.keep_alive()
    try:
        worker.work(with_scheduler=False)
    finally:
        jobs.close()


if __name__ == "__main__":
    # Run as `python -m`, this file is `__main__`; the horse runs TASK from the module proper,
    # whose events the worker's signal handlers must set: so the worker comes from there too.
    from app.training import rq_worker

    rq_worker.main()
