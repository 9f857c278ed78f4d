"""The runner against a scripted executor: what it does with each outcome, at shutdown and at
startup (the repair of what a crash left)."""

import pytest

from app.settings import Settings
from app.storage.integrity import Problems
from app.storage.jobs import JobStatus, JobStore
from app.storage.layout import DataLayout
from app.storage.sql_jobs import SqlJobStore
from app.storage.stores import open_dataset_store, open_model_store
from app.training import worker
from app.training.outcomes import Outcome, OutcomeKind
from app.training.runner import JobRunner
from tests.app.conftest import add_job


class ScriptedExecutor:
    """A `JobExecutor` whose runs end when a test says so, with the outcome it says."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.killed: list[str] = []
        self.ended: list[tuple[str, Outcome]] = []

    def start(self, job_id: str) -> None:
        self.started.append(job_id)

    def kill(self, job_id: str) -> None:
        self.killed.append(job_id)

    def reap(self) -> list[tuple[str, Outcome]]:
        ended, self.ended = self.ended, []
        return ended

    def running(self) -> list[str]:
        return [job_id for job_id in self.started if job_id not in self.killed]

    def shutdown(self, deadline: float) -> list[tuple[str, Outcome]]:
        return self.reap()

    def end(self, job_id: str, kind: OutcomeKind, reason: str | None = None) -> None:
        self.started.remove(job_id)
        self.ended.append((job_id, Outcome(kind, reason)))


@pytest.fixture
def executor() -> ScriptedExecutor:
    return ScriptedExecutor()


@pytest.fixture
def runner(
    settings: Settings, jobs: JobStore, layout: DataLayout, executor: ScriptedExecutor
) -> JobRunner:
    return JobRunner(
        jobs,
        open_dataset_store(settings, Problems()),
        open_model_store(settings, Problems()),
        executor,
        layout,
        workers=1,
        max_queue=4,
        poll_interval=1,
        train_threads=1,
    )


def test_jobs_start_one_at_a_time_and_a_died_worker_fails_its_job(
    runner: JobRunner, jobs: JobStore, executor: ScriptedExecutor, layout: DataLayout
) -> None:
    first, second = add_job(jobs), add_job(jobs)
    runner._tick()
    assert executor.started == [first] and jobs.get(second).status is JobStatus.queued
    layout.checkpoint(first, 1).write_bytes(b"epoch 1")
    executor.end(first, OutcomeKind.died, "worker process died (signal 9, SIGKILL)")
    runner._tick()
    job = jobs.get(first)
    assert job.status is JobStatus.failed and job.error == "worker process died (signal 9, SIGKILL)"
    assert not layout.checkpoint(first, 1).exists()
    assert executor.started == [second]


def test_an_interrupted_run_goes_back_to_the_queue_and_runs_again(
    runner: JobRunner, jobs: JobStore, executor: ScriptedExecutor, layout: DataLayout
) -> None:
    job_id = add_job(jobs)
    runner._tick()
    layout.checkpoint(job_id, 1).write_bytes(b"mid-epoch")
    executor.end(job_id, OutcomeKind.interrupted)
    runner._tick()
    assert executor.started == [job_id] and jobs.get(job_id).status is JobStatus.running
    assert layout.checkpoint(job_id, 1).exists()  # it resumes from there


def test_shutdown_requests_a_stop_of_each_running_job_and_starts_no_other(
    runner: JobRunner, jobs: JobStore, executor: ScriptedExecutor
) -> None:
    running, queued = add_job(jobs), add_job(jobs)
    runner._tick()
    runner.begin_shutdown()
    assert jobs.get(running).stop_requested and not jobs.get(queued).stop_requested
    executor.end(running, OutcomeKind.interrupted)
    runner.shutdown()
    assert jobs.get(running).status is JobStatus.queued
    assert jobs.get(running).stop_requested is False
    runner._tick()
    assert executor.started == []


def test_cancelling_a_running_job_kills_its_worker(
    runner: JobRunner, jobs: JobStore, executor: ScriptedExecutor
) -> None:
    job_id = add_job(jobs)
    runner._tick()
    assert runner.cancel(job_id).status is JobStatus.cancelled
    assert executor.killed == [job_id]


class Crash(BaseException):
    """Stands in for a kill: escapes every handler in the worker."""


def test_startup_repair_requeues_and_quarantines_unpublished_models(
    settings: Settings,
    layout: DataLayout,
    jobs: JobStore,
    runner: JobRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published, crashed, failed = add_job(jobs), add_job(jobs), add_job(jobs)
    jobs.claim_next()
    worker.run_job(published, settings)
    jobs.claim_next()
    finish = SqlJobStore.finish

    def die_before_succeeding(self, job_id: str, status: JobStatus, **fields: object) -> bool:
        if status is JobStatus.succeeded:
            raise Crash  # the worker stored its model but died before marking the job succeeded
        return finish(self, job_id, status, **fields)

    monkeypatch.setattr(SqlJobStore, "finish", die_before_succeeding)
    with pytest.raises(Crash):
        worker.run_job(crashed, settings)
    monkeypatch.setattr(SqlJobStore, "finish", finish)
    models = open_model_store(settings, Problems())
    [orphan] = [m for m in models.list_all() if m.job_id == crashed]
    jobs.claim_next()
    jobs.finish(failed, JobStatus.failed, error="boom")
    layout.checkpoint(failed, 1).write_bytes(b"stale")
    runner.recover()
    assert models.get(orphan.id) is None and models.get(jobs.get(published).model_id)
    moved = sorted(p.name.split("-", 2)[2] for p in (layout.quarantine / "models").iterdir())
    assert moved == [f"{orphan.id}.json", f"{orphan.id}.npz"]
    assert jobs.get(crashed).status is JobStatus.queued
    assert not layout.checkpoint(failed, 1).exists()
