"""The job store, atomic files, startup repair and the in-process worker."""

import math
from pathlib import Path

import numpy as np
import pytest

from app.ids import new_id
from app.storage.files import atomic_write_json, read_json, sweep_temp_files
from app.storage.jobs import EpochSummary, IterationCost, JobStatus, SqliteJobStore
from app.storage.layout import DataLayout
from app.storage.models import FileModelStore
from app.training import worker
from app.training.runner import JobRunner, death_reason
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING

TRAINING = {
    **TINY_TRAINING,
    "epochs": 3,
    "early_stopping": None,
    "optimizer": {"name": "adam", "learning_rate": 0.01},
}


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    layout = DataLayout(tmp_path)
    layout.create()
    return layout


@pytest.fixture
def jobs(layout: DataLayout) -> SqliteJobStore:
    store = SqliteJobStore(layout.jobs_db)
    yield store
    store.close()


def add_job(jobs: SqliteJobStore) -> str:
    job_id = new_id()
    jobs.create(job_id, None, "mnist-sample", TINY_ARCHITECTURE, TRAINING, threads=1)
    return job_id


def test_jobs_are_claimed_first_in_first_out(jobs: SqliteJobStore) -> None:
    ids = [add_job(jobs) for _ in range(3)]
    assert [jobs.get(i).queue_position for i in ids] == [1, 2, 3]
    assert jobs.claim_next() == ids[0]
    assert jobs.get(ids[0]).status is JobStatus.running
    assert jobs.get(ids[2]).queue_position == 2
    assert jobs.claim_next() == ids[1]


def test_terminal_states_never_change(jobs: SqliteJobStore) -> None:
    job_id = add_job(jobs)
    assert jobs.finish(job_id, JobStatus.succeeded) is False  # not running yet
    jobs.claim_next()
    assert jobs.cancel(job_id) is JobStatus.running
    assert jobs.finish(job_id, JobStatus.succeeded, model_id="x") is False
    assert jobs.cancel(job_id) is JobStatus.cancelled
    assert jobs.get(job_id).status is JobStatus.cancelled and jobs.get(job_id).model_id is None
    assert jobs.cancel(new_id()) is None


def test_running_jobs_go_back_to_the_queue_at_startup(jobs: SqliteJobStore) -> None:
    first, second = add_job(jobs), add_job(jobs)
    jobs.claim_next()
    assert jobs.requeue_running() == [first]
    assert jobs.claim_next() == first and jobs.get(second).queue_position == 1


@pytest.mark.parametrize(
    ("per_epoch", "recorded", "summaries", "epoch", "iteration", "kept"),
    [
        # from the checkpoint at the end of epoch 1, after a run that recorded part of epoch 2
        (2, 4, [1], 2, 3, [1, 2]),
        # from a checkpoint at iteration 4 (mid-epoch 2), after a run that got past epoch 2's end
        (3, 7, [1, 2], 2, 5, [1, 2, 3, 4]),
    ],
    ids=["at an epoch start", "mid-epoch"],
)
def test_a_new_run_drops_the_history_it_will_redo(
    jobs: SqliteJobStore,
    per_epoch: int,
    recorded: int,
    summaries: list[int],
    epoch: int,
    iteration: int,
    kept: list[int],
) -> None:
    job_id = add_job(jobs)
    jobs.record_iterations(
        job_id,
        [IterationCost(1 + (i - 1) // per_epoch, i, 1.0 / i) for i in range(1, recorded + 1)],
    )
    for e in summaries:
        jobs.record_epoch(
            job_id, EpochSummary(e, 0.5, 0.9, None, None, 1.0, last_iteration=e * per_epoch)
        )
    jobs.start_run(job_id, epoch=epoch, iteration=iteration, iterations_per_epoch=per_epoch)
    iterations, epochs = jobs.costs(job_id, 0)
    assert [i.iteration for i in iterations] == kept and [e.epoch for e in epochs] == [1]
    record = jobs.get(job_id)
    assert record.run_start_iteration == iteration - 1
    assert record.iterations_per_epoch == per_epoch
    assert record.latest.epoch == 1


def test_a_page_of_jobs_is_read_in_a_fixed_number_of_queries(jobs: SqliteJobStore) -> None:
    ids = [add_job(jobs) for _ in range(5)]
    jobs.claim_next()
    jobs.record_epoch(ids[0], EpochSummary(1, 0.5, 0.9, 0.6, 0.8, 1.0, last_iteration=57))
    jobs.record_epoch(ids[0], EpochSummary(2, 0.25, 0.95, 0.3, 0.9, 1.0, last_iteration=114))
    jobs.record_epoch(ids[3], EpochSummary(1, 0.75, 0.5, None, None, 2.0, last_iteration=57))
    statements = []
    jobs._conn.set_trace_callback(statements.append)
    page, total = jobs.list_page(None, 10, 0)
    jobs._conn.set_trace_callback(None)
    assert len(statements) == 2  # the count and the page, however many jobs it holds
    assert total == 5 and [r.id for r in page] == ids[::-1]
    assert page == [jobs.get(i) for i in ids[::-1]]
    assert [r.queue_position for r in page] == [4, 3, 2, 1, None]
    assert page[-1].latest == EpochSummary(2, 0.25, 0.95, 0.3, 0.9, 1.0, last_iteration=114)
    assert page[1].latest.epoch == 1 and page[0].latest is None
    queued, total = jobs.list_page(JobStatus.queued, 2, 1)
    assert total == 4 and [r.id for r in queued] == [ids[3], ids[2]]
    assert [r.queue_position for r in queued] == [3, 2]


def test_non_finite_costs_are_stored_as_null(jobs: SqliteJobStore) -> None:
    job_id = add_job(jobs)
    jobs.record_iterations(job_id, [IterationCost(1, 1, math.nan), IterationCost(1, 2, np.inf)])
    jobs.record_epoch(job_id, EpochSummary(1, np.float32("nan"), 0.1, None, None, 1.0, 2))
    iterations, epochs = jobs.costs(job_id, 0)
    assert [i.cost for i in iterations] == [None, None] and epochs[0].cost is None


def test_atomic_writes_leave_no_temp_files_and_sweep_removes_dead_ones(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    (tmp_path / ".tmp-dead-a.json").write_text("{")
    (tmp_path / ".b.npz.x1y2.tmp").write_text("")
    sweep_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(ValueError, match="Out of range float"):
        atomic_write_json(tmp_path / "c.json", {"x": math.nan})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_worker_death_reasons() -> None:
    assert death_reason(-9) == "worker process died (signal 9, SIGKILL)"
    assert death_reason(137) == "worker process exited with code 137"
    assert death_reason(0) == "worker process exited without reporting a result"


class Crash(BaseException):
    """Stands in for a kill: escapes every handler in the worker."""


def test_worker_resumes_a_crashed_run_to_the_same_model(
    layout: DataLayout, jobs: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
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
        worker.run_job(interrupted, layout.root)
    assert jobs.get(interrupted).status is JobStatus.running
    assert layout.checkpoint(interrupted).exists()
    monkeypatch.setattr(worker.ProgressRecorder, "__call__", record)
    worker.run_job(interrupted, layout.root)
    jobs.claim_next()
    worker.run_job(uninterrupted, layout.root)

    models = FileModelStore(layout.models)
    resumed, straight = (models.load(jobs.get(i).model_id) for i in (interrupted, uninterrupted))
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    iterations, epochs = jobs.costs(interrupted, 0)
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert [i.iteration for i in iterations] == list(range(1, 3 * 57 + 1))
    assert not layout.checkpoint(interrupted).exists()


def test_startup_repair_requeues_and_drops_unpublished_models(
    layout: DataLayout, jobs: SqliteJobStore
) -> None:
    published, crashed, failed = add_job(jobs), add_job(jobs), add_job(jobs)
    for job_id in (published, crashed):
        jobs.claim_next()
        worker.run_job(job_id, layout.root)
    jobs.claim_next()
    jobs.finish(failed, JobStatus.failed, error="boom")
    layout.checkpoint(failed).write_bytes(b"stale")
    models = FileModelStore(layout.models)
    # the crashed job's worker stored its model but died before marking the job succeeded
    orphan = jobs.get(crashed).model_id
    jobs._conn.execute(
        "UPDATE jobs SET status = 'running', model_id = NULL WHERE id = ?", (crashed,)
    )
    runner = JobRunner(
        jobs, None, models, None, layout, workers=1, max_queue=4, poll_interval=1, train_threads=1
    )
    runner.recover()
    assert models.get(orphan) is None and models.get(jobs.get(published).model_id)
    assert jobs.get(crashed).status is JobStatus.queued
    assert not layout.checkpoint(failed).exists()
