"""The worker in-process: training a job to its outcome, resuming, and honouring requests."""

import threading

import numpy as np
import pytest

from app.settings import Settings
from app.storage.integrity import Problems
from app.storage.jobs import JobStatus, JobStore
from app.storage.layout import DataLayout
from app.storage.stores import open_model_store
from app.training import worker
from app.training.outcomes import Outcome, OutcomeKind
from cnn_core import Network
from tests.app.conftest import add_job


def iteration(epoch: int, number: int) -> dict:
    return {"type": "iteration", "epoch": epoch, "iteration": number, "cost": 1.0,
            "iterations_per_epoch": 2}  # fmt: skip


def epoch_end(epoch: int) -> dict:
    return {"type": "epoch", "epoch": epoch, "cost": 1.0, "train_accuracy": 0.5,
            "val_cost": None, "val_accuracy": None, "seconds": 0.1}  # fmt: skip


def test_split_holds_out_a_seeded_share_disjoint_from_the_training_part() -> None:
    train, val = worker.split_indices(100, 0.1, seed=3)
    assert len(val) == worker.validation_count(100, 0.1) == 10
    assert sorted([*train, *val]) == list(range(100))
    np.testing.assert_array_equal(worker.split_indices(100, 0.1, seed=3)[1], val)
    assert not np.array_equal(worker.split_indices(100, 0.1, seed=4)[1], val)


def test_a_stop_seen_at_an_epoch_end_stops_the_next_iteration(jobs: JobStore) -> None:
    job_id = add_job(jobs)
    jobs.claim_next()
    recorder = worker.ProgressRecorder(jobs, job_id)
    assert recorder(iteration(1, 1)) is False  # the first iteration reads the job
    assert jobs.get(job_id).iteration == 1
    jobs.request_stop(job_id)
    assert recorder(iteration(1, 2)) is False  # not read again before FLUSH_SECONDS
    assert recorder(epoch_end(1)) is False and recorder.interrupted is False
    assert recorder(iteration(2, 3)) is True and recorder.interrupted is True
    assert jobs.get(job_id).iteration == 3  # written up to the iteration it stopped at


def test_a_stop_from_this_process_at_an_epochs_last_iteration_waits_for_the_next(
    jobs: JobStore,
) -> None:
    job_id = add_job(jobs)
    jobs.claim_next()
    stop = threading.Event()
    recorder = worker.ProgressRecorder(jobs, job_id, stop=stop)
    assert recorder(iteration(1, 1)) is False
    stop.set()  # the worker is shutting down
    assert recorder(iteration(1, 2)) is False  # the epoch's last: its summary comes first
    assert recorder(epoch_end(1)) is False and recorder.interrupted is False
    assert recorder(iteration(2, 3)) is True and recorder.interrupted is True
    assert jobs.get(job_id).iteration == 3


def test_a_cancel_stops_training_at_the_next_read(jobs: JobStore) -> None:
    job_id = add_job(jobs)
    jobs.claim_next()
    recorder = worker.ProgressRecorder(jobs, job_id)
    recorder(iteration(1, 1))
    jobs.cancel(job_id)
    assert recorder(epoch_end(1)) is True and recorder.interrupted is False


def test_a_job_that_is_not_running_is_left_alone(settings: Settings, jobs: JobStore) -> None:
    job_id = add_job(jobs)
    assert worker.run_job(job_id, settings) == Outcome(OutcomeKind.cancelled)
    assert jobs.get(job_id).status is JobStatus.queued and jobs.get(job_id).started_at is None


def test_running_out_of_memory_fails_the_job_with_advice(
    settings: Settings, layout: DataLayout, jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(jobs)
    jobs.claim_next()
    layout.checkpoint(job_id, 1).write_bytes(b"from an earlier run")

    def allocate_too_much(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(worker, "train", allocate_too_much)
    assert worker.run_job(job_id, settings) == Outcome(OutcomeKind.failed, worker.OUT_OF_MEMORY)
    job = jobs.get(job_id)
    assert job.status is JobStatus.failed and job.error == worker.OUT_OF_MEMORY
    assert not layout.checkpoint(job_id, 1).exists()


class Crash(BaseException):
    """Stands in for a kill: escapes every handler in the worker."""


def test_worker_resumes_a_crashed_run_to_the_same_model(
    settings: Settings, layout: DataLayout, jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted, uninterrupted = add_job(jobs), add_job(jobs)
    jobs.claim_next()
    record = worker.ProgressRecorder.__call__

    def crash_in_epoch_2(self, event: dict) -> bool:
        if event["type"] == "iteration" and event["epoch"] == 2 and event["iteration"] > 60:
            raise Crash
        return record(self, event)

    monkeypatch.setattr(worker.ProgressRecorder, "__call__", crash_in_epoch_2)
    with pytest.raises(Crash):
        worker.run_job(interrupted, settings)
    assert jobs.get(interrupted).status is JobStatus.running
    assert layout.checkpoint(interrupted, 1).exists()
    monkeypatch.setattr(worker.ProgressRecorder, "__call__", record)
    assert worker.run_job(interrupted, settings) == Outcome(OutcomeKind.succeeded)
    jobs.claim_next()
    worker.run_job(uninterrupted, settings)

    models = open_model_store(settings, Problems())
    resumed, straight = (models.load(jobs.get(i).model_id) for i in (interrupted, uninterrupted))
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    iterations, epochs = jobs.costs(interrupted, 0)
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert [i.iteration for i in iterations] == list(range(1, 3 * 57 + 1))
    assert not layout.checkpoint(interrupted, 1).exists()


def test_a_job_trains_and_resumes_with_the_thread_count_it_was_submitted_with(
    settings: Settings, jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(jobs, threads=2, epochs=2)
    jobs.claim_next()
    assert jobs.get(job_id).threads == 2
    seen = []
    fit = Network.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(kwargs["threads"])
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Network, "fit", recording_fit)
    jobs.request_stop(job_id)  # honoured at the first iteration, then resumed
    assert worker.run_job(job_id, settings) == Outcome(OutcomeKind.interrupted)
    stopped = jobs.get(job_id)
    assert stopped.status is JobStatus.running and stopped.iteration == 1
    assert jobs.requeue(job_id) and jobs.claim_next() == job_id
    assert worker.run_job(job_id, settings) == Outcome(OutcomeKind.succeeded)
    assert jobs.get(job_id).status is JobStatus.succeeded
    assert seen == [2, 2]


def test_a_run_taken_over_stops_and_publishes_nothing(
    settings: Settings, layout: DataLayout, jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add_job(jobs)
    assert jobs.claim("lost-worker", lease_seconds=60).attempt == 1
    record = worker.ProgressRecorder.__call__

    def taken_over_at_iteration_5(self, event: dict) -> bool:
        if event["type"] == "iteration" and event["iteration"] == 5:
            # what the lease sweep and another worker do while this one is cut off
            assert jobs.requeue(job_id, attempt=1)
            assert jobs.claim("other-worker", lease_seconds=60).attempt == 2
        return record(self, event)

    monkeypatch.setattr(worker.ProgressRecorder, "__call__", taken_over_at_iteration_5)
    assert worker.run_job(job_id, settings, attempt=1) == Outcome(OutcomeKind.superseded)
    job = jobs.get(job_id)
    assert job.status is JobStatus.running and job.attempt == 2 and job.model_id is None
    recorded = [i.iteration for i in jobs.costs(job_id, 0)[0]]
    assert recorded[0] == 1 and max(recorded) < 5  # nothing from after the takeover
    assert open_model_store(settings, Problems()).list_all() == []
    assert not layout.checkpoint(job_id, 2).exists()  # the new attempt's file is its own
    assert worker.run_job(job_id, settings, attempt=1) == Outcome(OutcomeKind.superseded)
