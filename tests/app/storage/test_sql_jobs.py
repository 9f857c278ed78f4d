"""The job store on SQLite and PostgreSQL alike: the queue, status transitions, requests, cost
history, leases and fencing by attempt, schema version and upgrade (from every earlier version)."""

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from app.ids import new_id
from app.settings import Settings
from app.storage import sql_jobs
from app.storage.jobs import EpochSummary, IterationCost, JobStatus
from app.storage.layout import DataLayout
from app.storage.sql_jobs import (
    SCHEMA_VERSION,
    Claim,
    JobStoreVersionError,
    SqlJobStore,
    database_url,
)
from app.storage.stores import open_job_store
from tests.app.conftest import STORE_TRAINING, TINY_ARCHITECTURE, add_job


@pytest.fixture
def jobs(settings: Settings, layout: DataLayout, database_url: str | None) -> Iterator[SqlJobStore]:
    """The job store on SQLite, then on PostgreSQL: each test here runs once for each."""
    store = open_job_store(settings.model_copy(update={"database_url": database_url}))
    yield store
    store.close()


def test_jobs_are_claimed_first_in_first_out(jobs: SqlJobStore) -> None:
    ids = [add_job(jobs) for _ in range(3)]
    assert [jobs.get(i).queue_position for i in ids] == [1, 2, 3]
    assert jobs.claim_next() == ids[0]
    assert jobs.get(ids[0]).status is JobStatus.running
    assert jobs.get(ids[2]).queue_position == 2
    assert jobs.claim_next() == ids[1]


def test_terminal_states_never_change(jobs: SqlJobStore) -> None:
    job_id = add_job(jobs)
    assert jobs.finish(job_id, JobStatus.succeeded) is False  # not running yet
    jobs.claim_next()
    assert jobs.cancel(job_id) is JobStatus.running
    assert jobs.finish(job_id, JobStatus.succeeded, model_id="x") is False
    assert jobs.cancel(job_id) is JobStatus.cancelled
    assert jobs.get(job_id).status is JobStatus.cancelled and jobs.get(job_id).model_id is None
    assert jobs.cancel(new_id()) is None


def test_running_jobs_go_back_to_the_queue_at_startup(jobs: SqlJobStore) -> None:
    first, second = add_job(jobs), add_job(jobs)
    jobs.claim_next()
    assert jobs.requeue_running() == [first]
    assert jobs.claim_next() == first and jobs.get(second).queue_position == 1


def test_a_stop_is_requested_of_running_jobs_only_and_ends_with_the_requeue(
    jobs: SqlJobStore,
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
    jobs: SqlJobStore,
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


def test_a_page_of_jobs_is_read_in_a_fixed_number_of_queries(jobs: SqlJobStore) -> None:
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


def test_non_finite_costs_are_stored_as_null(jobs: SqlJobStore) -> None:
    job_id = add_job(jobs)
    jobs.record_iterations(job_id, [IterationCost(1, 1, math.nan), IterationCost(1, 2, np.inf)])
    jobs.record_epoch(job_id, EpochSummary(1, np.float32("nan"), 0.1, None, None, 1.0, 2))
    iterations, epochs = jobs.costs(job_id, 0)
    assert [i.cost for i in iterations] == [None, None] and epochs[0].cost is None


def test_a_new_file_gets_the_schema_version_and_reopens_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"  # where database_url(None, tmp_path) points
    store = SqlJobStore(database_url(None, tmp_path))
    job_id = add_job(store)
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store = SqlJobStore(database_url(None, tmp_path))
    assert store.get(job_id).status is JobStatus.queued
    store.close()


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1], ids=["pre-release", "newer"])
def test_a_file_of_another_schema_version_is_refused_and_left_as_it_is(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "jobs.sqlite3"  # where database_url(None, tmp_path) points
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT)")
        conn.execute(f"PRAGMA user_version = {version}")
    with pytest.raises(JobStoreVersionError, match=f"schema version {version} .* move the file"):
        SqlJobStore(database_url(None, tmp_path))
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert columns == ["id"] and conn.execute("PRAGMA user_version").fetchone()[0] == version


def test_a_worker_taken_over_writes_nothing(jobs: SqlJobStore) -> None:
    job_id = add_job(jobs)
    first = jobs.claim("worker-a", lease_seconds=60)
    assert first.attempt == 1 and jobs.get(job_id).worker == "worker-a"
    assert jobs.record_iterations(job_id, [IterationCost(1, 1, 2.0)], attempt=1)
    assert jobs.requeue(job_id, attempt=1)  # stopped on request
    second = jobs.claim("worker-b", lease_seconds=60)
    assert second == type(first)(job_id, 2)
    assert jobs.start_run(job_id, 1, 1, 2, attempt=1) is False
    assert jobs.record_iterations(job_id, [IterationCost(1, 2, 9.0)], attempt=1) is False
    assert jobs.record_epoch(job_id, EpochSummary(1, 9.0, 0, None, None, 1, 2), attempt=1) is False
    assert jobs.renew_lease(job_id, 1, 60) is False and jobs.requeue(job_id, attempt=1) is False
    assert jobs.finish(job_id, JobStatus.succeeded, model_id="stale", attempt=1) is False
    iterations, epochs = jobs.costs(job_id, 0)
    assert [(i.iteration, i.cost) for i in iterations] == [(1, 2.0)] and epochs == []
    assert jobs.get(job_id).iteration == 1 and jobs.get(job_id).status is JobStatus.running
    assert jobs.record_iterations(job_id, [IterationCost(1, 2, 1.5)], attempt=2)
    assert jobs.finish(job_id, JobStatus.succeeded, model_id="fresh", attempt=2)
    assert jobs.get(job_id).model_id == "fresh"


def test_an_expired_lease_requeues_its_job_then_fails_it_after_max_losses(
    jobs: SqlJobStore,
) -> None:
    doomed, later = add_job(jobs), add_job(jobs)
    for loss in (1, 2):
        claim = jobs.claim("w", lease_seconds=0.05)
        assert claim.job_id == doomed and jobs.renew_lease(doomed, claim.attempt, 0.05)
        assert jobs.expire_leases(max_losses=3) == ([], [])  # not expired yet
        time.sleep(0.1)
        assert jobs.expire_leases(max_losses=3) == ([doomed], []), loss
        job = jobs.get(doomed)
        assert job.status is JobStatus.queued and job.queue_position == 1 and job.worker is None
    jobs.claim("w", lease_seconds=0.01)
    time.sleep(0.05)
    assert jobs.expire_leases(max_losses=3) == ([], [doomed])
    job = jobs.get(doomed)
    assert job.status is JobStatus.failed and "lost 3 times" in job.error
    assert jobs.get(later).queue_position == 1
    jobs.claim_next()  # a claim without a lease (a local worker) never expires
    time.sleep(0.05)
    assert jobs.expire_leases(max_losses=3) == ([], [])


def test_the_queue_bound_and_single_claims_hold_under_concurrent_callers(
    jobs: SqlJobStore,
) -> None:
    def submit(_: int) -> bool:
        training = {**STORE_TRAINING}
        return jobs.create(new_id(), None, "mnist-sample", TINY_ARCHITECTURE, training, 1,
                           max_queued=5) is not None  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(submit, range(16)))
    assert sum(accepted) == 5 and jobs.count(JobStatus.queued) == 5
    with ThreadPoolExecutor(8) as pool:
        claims = [c for c in pool.map(lambda _: jobs.claim("w", 30), range(8)) if c]
    assert len(claims) == 5 and len({c.job_id for c in claims}) == 5
    order = [r.id for r in jobs.list_page(None, 10, 0)[0]][::-1]
    assert sorted(c.job_id for c in claims) == sorted(order)


def test_workers_are_live_until_they_are_not_seen(jobs: SqlJobStore) -> None:
    jobs.worker_seen("host-a-1")
    jobs.worker_seen("host-b-2")
    first = jobs.live_workers(within=10)[0]
    jobs.worker_seen("host-a-1")
    live = jobs.live_workers(within=10)
    assert [w.name for w in live] == ["host-a-1", "host-b-2"]
    assert live[0].started_at == first.started_at and live[0].seen_at > first.seen_at
    jobs.worker_gone("host-b-2")
    assert [w.name for w in jobs.live_workers(within=10)] == ["host-a-1"]
    time.sleep(0.05)
    assert jobs.live_workers(within=0.01) == []


@pytest.mark.parametrize("version", [0, 1], ids=["landed-0", "1"])
def test_a_sqlite3_store_file_is_upgraded_with_its_jobs(tmp_path: Path, version: int) -> None:
    """Version 0 (the first release's file) lacks stop_requested, version 1 has it; neither
    has leases or epochs.learning_rate. Both open with their jobs, costs and epochs."""
    path = tmp_path / "jobs.sqlite3"
    schema = VERSION_1_SCHEMA
    if version == 0:
        schema = schema.replace(",\n    stop_requested INTEGER NOT NULL DEFAULT 0", "")
    with sqlite3.connect(path) as conn:  # the sqlite3 store's schema
        conn.executescript(schema)
        conn.execute(
            "INSERT INTO jobs (id, dataset_id, architecture, training, status, created_at,"
            " iteration) VALUES ('old', 'mnist-sample', '{}', ?, 'running', 1.0, 7)",
            (json.dumps(STORE_TRAINING),),
        )
        conn.execute("INSERT INTO iterations VALUES ('old', 7, 1, 0.5)")
        conn.execute("INSERT INTO epochs VALUES ('old', 1, 0.5, 0.8, NULL, NULL, 1.0, 7)")
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    store = SqlJobStore(database_url(None, tmp_path))
    old = store.get("old")
    assert old.status is JobStatus.running and old.iteration == 7 and old.attempt == 0
    iterations, epochs = store.costs("old", 0)
    assert iterations == [IterationCost(1, 7, 0.5)]
    assert [(e.epoch, e.cost, e.learning_rate) for e in epochs] == [(1, 0.5, None)]
    assert store.requeue_running() == ["old"] and store.claim("w", 5) == Claim("old", 1)
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    SqlJobStore(database_url(None, tmp_path)).close()  # and opens again as it is


@pytest.fixture
def store_url(tmp_path: Path, database_url: str | None):
    """The SQLAlchemy URL of an empty job database: SQLite, then PostgreSQL."""
    return sql_jobs.database_url(database_url, tmp_path)


def _schema_version(url) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version FROM schema_version")).scalar_one()
    finally:
        engine.dispose()


def test_a_version_2_database_is_upgraded_with_its_jobs(store_url) -> None:
    """Version 2 (leases and workers, before epochs.learning_rate) is what the first scale-out
    build created on PostgreSQL and SQLite alike; it opens with its jobs, costs and epochs."""
    store = SqlJobStore(store_url)
    job_id = add_job(store)
    claim = store.claim("w", lease_seconds=60)
    store.record_iterations(job_id, [IterationCost(1, 1, 0.5)], attempt=claim.attempt)
    store.record_epoch(job_id, EpochSummary(1, 0.5, 0.8, None, None, 1.0, 1), claim.attempt)
    store.close()
    engine = create_engine(store_url)  # back to what a version-2 build left
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE epochs DROP COLUMN learning_rate"))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    engine.dispose()
    assert _schema_version(store_url) == 2

    store = SqlJobStore(store_url)
    assert _schema_version(store_url) == SCHEMA_VERSION
    job = store.get(job_id)
    assert job.status is JobStatus.running and job.attempt == 1 and job.worker == "w"
    iterations, epochs = store.costs(job_id, 0)
    assert iterations == [IterationCost(1, 1, 0.5)]
    assert [(e.epoch, e.cost, e.learning_rate) for e in epochs] == [(1, 0.5, None)]
    summary = EpochSummary(2, 0.25, 0.9, None, None, 1.0, 2, learning_rate=0.001)
    assert store.record_epoch(job_id, summary, attempt=1)
    assert store.costs(job_id, 0)[1][-1].learning_rate == 0.001  # the new column works
    store.close()
    SqlJobStore(store_url).close()  # and opens again as it is
    assert _schema_version(store_url) == SCHEMA_VERSION


def test_a_database_of_a_newer_schema_is_refused_and_left_as_it_is(store_url) -> None:
    SqlJobStore(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}"))
    engine.dispose()
    with pytest.raises(JobStoreVersionError, match=f"schema version {SCHEMA_VERSION + 1} "):
        SqlJobStore(store_url)
    assert _schema_version(store_url) == SCHEMA_VERSION + 1


VERSION_1_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT,
    dataset_id TEXT NOT NULL, architecture TEXT NOT NULL, training TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    epoch INTEGER NOT NULL DEFAULT 0, iteration INTEGER NOT NULL DEFAULT 0,
    iterations_per_epoch INTEGER, run_started_at REAL,
    run_start_iteration INTEGER NOT NULL DEFAULT 0, error TEXT, model_id TEXT, threads INTEGER,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status ON jobs (status, seq);
CREATE TABLE iterations (job_id TEXT NOT NULL, iteration INTEGER NOT NULL,
    epoch INTEGER NOT NULL, cost REAL, PRIMARY KEY (job_id, iteration)) WITHOUT ROWID;
CREATE TABLE epochs (job_id TEXT NOT NULL, epoch INTEGER NOT NULL, cost REAL,
    train_accuracy REAL, val_cost REAL, val_accuracy REAL, seconds REAL,
    last_iteration INTEGER NOT NULL, PRIMARY KEY (job_id, epoch)) WITHOUT ROWID;
"""
