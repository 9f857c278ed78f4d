"""The process executor: a worker process per job, reporting its outcome or its death."""

import time

import pytest

from app.settings import Settings
from app.storage.jobs import JobStatus, JobStore
from app.training.executor import ProcessExecutor, death_reason
from app.training.outcomes import Outcome, OutcomeKind
from cnn_core import build_preset
from tests.app.conftest import STORE_TRAINING, add_job

DEFAULT_MEMORY_MB = Settings.model_fields["worker_memory_mb"].default


def wait_for_outcomes(executor: ProcessExecutor, timeout: float = 60) -> list[tuple[str, Outcome]]:
    deadline = time.monotonic() + timeout
    while not (ended := executor.reap()):
        assert time.monotonic() < deadline, "no worker ended in time"
        time.sleep(0.02)
    return ended


@pytest.fixture
def executor(settings: Settings) -> ProcessExecutor:
    executor = ProcessExecutor(settings.model_copy(update={"worker_memory_mb": DEFAULT_MEMORY_MB}))
    yield executor
    executor.shutdown(time.monotonic() + 5)


def test_worker_death_reasons() -> None:
    assert death_reason(-9) == "worker process died (signal 9, SIGKILL)"
    assert death_reason(137) == "worker process exited with code 137"
    assert death_reason(0) == "worker process exited without reporting a result"


def test_lenet5_trains_under_the_default_memory_limit_and_reports_success(
    executor: ProcessExecutor, jobs: JobStore
) -> None:
    # NumPy and OpenBLAS reserve far more address space than they touch: the default limit
    # must leave room for that, as every job trains under it.
    lenet = build_preset("lenet5", [1, 28, 28], 10)
    jobs.create("lenet", None, "mnist-sample", lenet, {**STORE_TRAINING, "epochs": 1}, threads=2)
    jobs.claim_next()
    executor.start("lenet")
    assert executor.running() == ["lenet"]
    assert wait_for_outcomes(executor) == [("lenet", Outcome(OutcomeKind.succeeded))]
    assert jobs.get("lenet").status is JobStatus.succeeded and executor.running() == []


def test_a_killed_worker_is_reported_dead_with_its_signal(
    executor: ProcessExecutor, jobs: JobStore
) -> None:
    job_id = add_job(jobs, epochs=200)
    jobs.claim_next()
    executor.start(job_id)
    deadline = time.monotonic() + 30
    while jobs.get(job_id).iteration == 0:
        assert time.monotonic() < deadline, "the worker did not start training"
        time.sleep(0.02)
    executor.kill(job_id)
    died = Outcome(OutcomeKind.died, "worker process died (signal 9, SIGKILL)")
    assert wait_for_outcomes(executor) == [(job_id, died)]
    assert jobs.get(job_id).status is JobStatus.running  # the runner settles it, not the executor
