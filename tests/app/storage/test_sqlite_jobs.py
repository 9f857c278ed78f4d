"""The SQLite job store: the queue, status transitions, requests, cost history, schema version."""

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.ids import new_id
from app.storage.jobs import EpochSummary, IterationCost, JobStatus
from app.storage.sqlite_jobs import SCHEMA_VERSION, JobStoreVersionError, SqliteJobStore
from tests.app.conftest import add_job


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


def test_a_stop_is_requested_of_running_jobs_only_and_ends_with_the_requeue(
    jobs: SqliteJobStore,
) -> None:
    running, queued = add_job(jobs), add_job(jobs)
    jobs.claim_next()
    assert jobs.request_stop(queued) is False and jobs.get(queued).stop_requested is False
    assert jobs.request_stop(running) is True and jobs.get(running).stop_requested is True
    assert jobs.requeue(running) is True
    assert jobs.get(running).stop_requested is False
    assert jobs.get(running).queue_position == 1  # back at its old place
    jobs.claim_next()
    jobs.request_stop(running)
    assert jobs.requeue_running() == [running] and jobs.get(running).stop_requested is False


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
    with jobs.traced() as statements:
        page, total = jobs.list_page(None, 10, 0)
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


def test_a_new_file_gets_the_schema_version_and_reopens_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path)
    job_id = add_job(store)
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store = SqliteJobStore(path)
    assert store.get(job_id).status is JobStatus.queued
    store.close()


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1], ids=["pre-release", "newer"])
def test_a_file_of_another_schema_version_is_refused_and_left_as_it_is(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT)")
        conn.execute(f"PRAGMA user_version = {version}")
    with pytest.raises(JobStoreVersionError, match=f"schema version {version} .* move the file"):
        SqliteJobStore(path)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert columns == ["id"] and conn.execute("PRAGMA user_version").fetchone()[0] == version


def test_a_version_1_file_is_upgraded_and_keeps_its_epochs(tmp_path: Path) -> None:
    """Version 1 had no epochs.learning_rate: the column is added, old epochs read None."""
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path)
    job_id = add_job(store)
    store.record_epoch(job_id, EpochSummary(1, 0.5, 0.8, None, None, 1.0, 3, 0.01))
    store.close()
    with sqlite3.connect(path) as conn:  # back to version 1's table
        conn.executescript("ALTER TABLE epochs DROP COLUMN learning_rate; PRAGMA user_version = 1;")
    store = SqliteJobStore(path)
    assert [e.learning_rate for e in store.costs(job_id, 0)[1]] == [None]
    store.record_epoch(job_id, EpochSummary(2, 0.4, 0.9, None, None, 1.0, 6, 0.005))
    assert [e.learning_rate for e in store.costs(job_id, 0)[1]] == [None, 0.005]
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
