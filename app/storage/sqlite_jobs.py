"""`JobStore` on one SQLite file in WAL mode: the server reads while worker processes write,
each write a short transaction. For one machine only: WAL does not work over a network file
system, so jobs shared between machines need a server database behind the same protocol.

The schema carries a version (`PRAGMA user_version`): a new file gets `SCHEMA_VERSION`, a file
of another version is refused with a message saying so. When the schema next changes, the
upgrade from the version before goes in `SqliteJobStore._open_schema`.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from app.storage.jobs import (
    MAX_STORED_ITERATIONS,
    RECENT_ITERATIONS,
    EpochSummary,
    IterationCost,
    JobRecord,
    JobStatus,
    finite_or_none,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    dataset_id TEXT NOT NULL,
    architecture TEXT NOT NULL,
    training TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    epoch INTEGER NOT NULL DEFAULT 0,
    iteration INTEGER NOT NULL DEFAULT 0,
    iterations_per_epoch INTEGER,
    run_started_at REAL,
    run_start_iteration INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    model_id TEXT,
    threads INTEGER,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS iterations (
    job_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    cost REAL,
    PRIMARY KEY (job_id, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS epochs (
    job_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    cost REAL,
    train_accuracy REAL,
    val_cost REAL,
    val_accuracy REAL,
    seconds REAL,
    last_iteration INTEGER NOT NULL,
    PRIMARY KEY (job_id, epoch)
) WITHOUT ROWID;
"""

_EPOCH_FIELDS = tuple(f.name for f in fields(EpochSummary))
_EPOCH_COLUMNS = ", ".join(_EPOCH_FIELDS)

# Job rows with what a record shows besides them, in one query: the queue position of a queued
# job and the summary of its latest epoch (as latest_<field>, NULL when it has none).
_SELECT_RECORDS = f"""
SELECT jobs.*,
    CASE WHEN jobs.status = 'queued' THEN
        (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq <= jobs.seq)
    END AS queue_position,
    {", ".join(f"latest.{f} AS latest_{f}" for f in _EPOCH_FIELDS)}
FROM jobs
LEFT JOIN epochs AS latest ON latest.job_id = jobs.id
    AND latest.epoch = (SELECT MAX(epoch) FROM epochs WHERE epochs.job_id = jobs.id)
"""


# The record's fields that a row holds as they are (the others are decoded in `_record`).
_RECORD_COLUMNS = [
    f.name
    for f in fields(JobRecord)
    if f.name not in ("architecture", "training", "status", "stop_requested", "latest")
]


def _thin_old_iterations(conn: sqlite3.Connection, job_id: str) -> None:
    """The retention policy (`app.storage.jobs`): past `MAX_STORED_ITERATIONS` rows, drop every
    other row older than the most recent `RECENT_ITERATIONS` (the first row stays)."""
    [[count]] = conn.execute("SELECT COUNT(*) FROM iterations WHERE job_id = ?", (job_id,))
    if count <= MAX_STORED_ITERATIONS:
        return
    conn.execute(
        "DELETE FROM iterations WHERE job_id = ? AND iteration IN (SELECT iteration FROM"
        " (SELECT iteration, ROW_NUMBER() OVER (ORDER BY iteration) AS k FROM iterations"
        " WHERE job_id = ? ORDER BY iteration LIMIT ?) WHERE k % 2 = 0)",
        (job_id, job_id, count - RECENT_ITERATIONS),
    )


class JobStoreVersionError(RuntimeError):
    """The job database was written by a build with another schema."""


class SqliteJobStore:
    """`JobStore` on one SQLite file (WAL); safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            path, timeout=30, check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._open_schema(path)

    def _open_schema(self, path: Path) -> None:
        """Create the schema in a new file; refuse a file of another schema version."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not self._conn.execute("SELECT 1 FROM sqlite_master").fetchone():
            # One transaction: a process opening the file meanwhile sees no schema or all of it.
            self._conn.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
        elif version != SCHEMA_VERSION:
            self._conn.close()
            raise JobStoreVersionError(
                f"{path} holds jobs in schema version {version} (0: a pre-release build) and "
                f"this build reads version {SCHEMA_VERSION}: move the file away to start afresh"
            )

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @contextmanager
    def traced(self) -> Iterator[list[str]]:
        """The SQL statements this store runs inside the block, to check how many a call takes."""
        statements: list[str] = []
        with self._lock:
            self._conn.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            with self._lock:
                self._conn.set_trace_callback(None)

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction, committed unless an error escapes."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _write(self, *statements: tuple[str, tuple]) -> int:
        """Run `statements` in one transaction; the row count of the first."""
        with self._transaction() as conn:
            changed = [conn.execute(sql, params).rowcount for sql, params in statements]
        return changed[0]

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        """The record of a row selected by `_SELECT_RECORDS`."""
        latest = None
        if row["latest_epoch"] is not None:
            latest = EpochSummary(**{f: row[f"latest_{f}"] for f in _EPOCH_FIELDS})
        columns = {name: row[name] for name in _RECORD_COLUMNS}
        return JobRecord(
            **columns,
            architecture=json.loads(row["architecture"]),
            training=json.loads(row["training"]),
            status=JobStatus(row["status"]),
            stop_requested=bool(row["stop_requested"]),
            latest=latest,
        )

    def create(
        self,
        job_id: str,
        name: str | None,
        dataset_id: str,
        architecture: dict[str, Any],
        training: dict[str, Any],
        threads: int,
    ) -> JobRecord:
        """Insert a queued job at the back of the queue. It trains with `threads` threads
        whenever it runs: the weights depend on the count, so a resumed run uses the same."""
        self._write(
            (
                (
                    "INSERT INTO jobs (id, name, dataset_id, architecture, training, status,"
                    " created_at, threads) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)"
                ),
                (
                    job_id,
                    name,
                    dataset_id,
                    json.dumps(architecture),
                    json.dumps(training),
                    time.time(),
                    threads,
                ),
            )
        )
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        rows = self._read(f"{_SELECT_RECORDS} WHERE jobs.id = ?", (job_id,))
        return self._record(rows[0]) if rows else None

    def list_page(
        self, status: JobStatus | None, limit: int, offset: int
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and the total count matching `status`."""
        where, params = ("WHERE jobs.status = ?", (status.value,)) if status else ("", ())
        total = self._read(f"SELECT COUNT(*) FROM jobs {where}", params)[0][0]
        rows = self._read(
            f"{_SELECT_RECORDS} {where} ORDER BY jobs.seq DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self._record(row) for row in rows], total

    def count(self, status: JobStatus) -> int:
        """How many jobs have `status`."""
        return self._read("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,))[0][0]

    def is_dataset_in_use(self, dataset_id: str) -> bool:
        """Whether a queued or running job trains on `dataset_id`."""
        return bool(
            self._read(
                "SELECT 1 FROM jobs WHERE dataset_id = ? AND status IN ('queued', 'running')"
                " LIMIT 1",
                (dataset_id,),
            )
        )

    def claim_next(self) -> str | None:
        """Move the oldest queued job to running and return its id."""
        with self._lock:
            row = self._conn.execute(
                "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?)"
                " WHERE seq = (SELECT MIN(seq) FROM jobs WHERE status = 'queued') RETURNING id",
                (time.time(),),
            ).fetchone()
        return row["id"] if row else None

    def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a queued or running job; the status it had before, or None if unknown."""
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row and JobStatus(row["status"]).is_active:
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                    (time.time(), job_id),
                )
        return JobStatus(row["status"]) if row else None

    def request_stop(self, job_id: str) -> bool:
        """Ask a running job's worker to checkpoint and stop (it goes back to the queue);
        False if the job is not running."""
        return (
            self._write(
                (
                    "UPDATE jobs SET stop_requested = 1 WHERE id = ? AND status = 'running'",
                    (job_id,),
                )
            )
            == 1
        )

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        model_id: str | None = None,
    ) -> bool:
        """Move a running job to a terminal `status`; False if it was no longer running."""
        return (
            self._write(
                (
                    (
                        "UPDATE jobs SET status = ?, error = ?, model_id = ?, finished_at = ?"
                        " WHERE id = ? AND status = 'running'"
                    ),
                    (status.value, error, model_id, time.time(), job_id),
                )
            )
            == 1
        )

    def requeue(self, job_id: str) -> bool:
        """Put a running job back in the queue (at its old place); False if not running."""
        return (
            self._write(
                (
                    "UPDATE jobs SET status = 'queued', stop_requested = 0"
                    " WHERE id = ? AND status = 'running'",
                    (job_id,),
                )
            )
            == 1
        )

    def requeue_running(self) -> list[str]:
        """Put jobs a previous server left running back in the queue (they keep their place)."""
        with self._lock:
            rows = self._conn.execute(
                "UPDATE jobs SET status = 'queued', stop_requested = 0 WHERE status = 'running'"
                " RETURNING id"
            ).fetchall()
        return [row["id"] for row in rows]

    def start_run(self, job_id: str, epoch: int, iteration: int, iterations_per_epoch: int) -> None:
        """A worker's first iteration (`iteration` of `epoch`; later than 1 when it resumes from
        a checkpoint): drop the history it will redo, the costs from `iteration` on and the
        summaries from `epoch` on, which a run killed after its checkpoint had recorded."""
        self._write(
            (
                (
                    "UPDATE jobs SET run_started_at = ?, run_start_iteration = ?,"
                    " iterations_per_epoch = ? WHERE id = ?"
                ),
                (time.time(), iteration - 1, iterations_per_epoch, job_id),
            ),
            ("DELETE FROM iterations WHERE job_id = ? AND iteration >= ?", (job_id, iteration)),
            ("DELETE FROM epochs WHERE job_id = ? AND epoch >= ?", (job_id, epoch)),
        )

    def record_iterations(self, job_id: str, rows: list[IterationCost]) -> None:
        """Append iteration costs and move the job's progress to the last one."""
        last = rows[-1]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO iterations (job_id, iteration, epoch, cost)"
                " VALUES (?, ?, ?, ?)",
                [(job_id, r.iteration, r.epoch, finite_or_none(r.cost)) for r in rows],
            )
            conn.execute(
                "UPDATE jobs SET epoch = ?, iteration = ? WHERE id = ?",
                (last.epoch, last.iteration, job_id),
            )
            _thin_old_iterations(conn, job_id)

    def record_epoch(self, job_id: str, summary: EpochSummary) -> None:
        """Store one epoch's summary (replacing an earlier one for the same epoch)."""
        self._write(
            (
                (
                    f"INSERT OR REPLACE INTO epochs (job_id, {_EPOCH_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    job_id,
                    summary.epoch,
                    finite_or_none(summary.cost),
                    finite_or_none(summary.train_accuracy),
                    finite_or_none(summary.val_cost),
                    finite_or_none(summary.val_accuracy),
                    finite_or_none(summary.seconds),
                    summary.last_iteration,
                ),
            )
        )

    def costs(
        self, job_id: str, since: int, *, max_points: int | None = None, limit: int | None = None
    ) -> tuple[list[IterationCost], list[EpochSummary]]:
        """Iterations after `since` and the epochs that ended after it, in order. With
        `max_points`, the iterations are thinned to at most that many, evenly by rank, the
        last one always kept; with `limit`, only the first `limit` (after thinning)."""
        where = "FROM iterations WHERE job_id = ? AND iteration > ?"
        params: tuple = (job_id, since)
        if max_points is None:
            sql = f"SELECT epoch, iteration, cost {where} ORDER BY iteration"
        else:
            [[count]] = self._read(f"SELECT COUNT(*) {where}", params)
            stride = 1 if count <= max_points else -(-count // (max_points - 1))
            sql = (
                "SELECT epoch, iteration, cost FROM (SELECT epoch, iteration, cost,"
                f" ROW_NUMBER() OVER (ORDER BY iteration) - 1 AS k {where})"
                " WHERE k % ? = 0 OR k = ? ORDER BY iteration"
            )
            params = (*params, stride, count - 1)
        if limit is not None:
            sql, params = f"{sql} LIMIT ?", (*params, limit)
        iterations = self._read(sql, params)
        epochs = self._read(
            f"SELECT {_EPOCH_COLUMNS} FROM epochs WHERE job_id = ? AND last_iteration > ?"
            " ORDER BY epoch",
            (job_id, since),
        )
        return [IterationCost(**row) for row in iterations], [EpochSummary(**row) for row in epochs]
