"""The job store: job records, their status and progress, and the cost history.

`JobStore` is the interface the API, the runner and the workers use; `SqliteJobStore` keeps it
in one SQLite file in WAL mode, so the server reads while worker processes write, each write a
short transaction. A server database could implement the same protocol.

Status transitions: queued -> running -> succeeded | failed | cancelled, and queued ->
cancelled. A `running` job goes back to `queued` when its worker stopped to be resumed later
(the server shutting down) or was left running by a previous server boot; it resumes from its
checkpoint. Terminal states never change.
"""

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from cnn_core.history import EpochSummary, IterationCost


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_active(self) -> bool:
        """Queued or running."""
        return self in (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str | None
    dataset_id: str
    architecture: dict[str, Any]
    training: dict[str, Any]
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    epoch: int = 0
    iteration: int = 0
    iterations_per_epoch: int | None = None
    run_started_at: float | None = None
    run_start_iteration: int = 0
    error: str | None = None
    model_id: str | None = None
    threads: int | None = None
    queue_position: int | None = None
    latest: EpochSummary | None = None


class JobStore(Protocol):
    """What the service needs from a job store."""

    def create(
        self,
        job_id: str,
        name: str | None,
        dataset_id: str,
        architecture: dict[str, Any],
        training: dict[str, Any],
        threads: int,
    ) -> JobRecord: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def list_page(
        self, status: JobStatus | None, limit: int, offset: int
    ) -> tuple[list[JobRecord], int]: ...
    def count(self, status: JobStatus) -> int: ...
    def is_dataset_in_use(self, dataset_id: str) -> bool: ...
    def claim_next(self) -> str | None: ...
    def cancel(self, job_id: str) -> JobStatus | None: ...
    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        model_id: str | None = None,
    ) -> bool: ...
    def requeue(self, job_id: str) -> bool: ...
    def requeue_running(self) -> list[str]: ...
    def start_run(
        self, job_id: str, epoch: int, iteration: int, iterations_per_epoch: int
    ) -> None: ...
    def record_iterations(self, job_id: str, rows: list[IterationCost]) -> None: ...
    def record_epoch(self, job_id: str, summary: EpochSummary) -> None: ...
    def costs(self, job_id: str, since: int) -> tuple[list[IterationCost], list[EpochSummary]]: ...


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
    threads INTEGER
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


def finite_or_none(value: Any) -> float | None:
    """`value` as a Python float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
            self._conn.executescript(_SCHEMA)
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(jobs)")}
            if "threads" not in columns:  # a data dir from before jobs recorded it
                self._conn.execute("ALTER TABLE jobs ADD COLUMN threads INTEGER")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

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
        return JobRecord(
            id=row["id"],
            name=row["name"],
            dataset_id=row["dataset_id"],
            architecture=json.loads(row["architecture"]),
            training=json.loads(row["training"]),
            status=JobStatus(row["status"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            epoch=row["epoch"],
            iteration=row["iteration"],
            iterations_per_epoch=row["iterations_per_epoch"],
            run_started_at=row["run_started_at"],
            run_start_iteration=row["run_start_iteration"],
            error=row["error"],
            model_id=row["model_id"],
            threads=row["threads"],
            queue_position=row["queue_position"],
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
                    "UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'",
                    (job_id,),
                )
            )
            == 1
        )

    def requeue_running(self) -> list[str]:
        """Put jobs a previous server left running back in the queue (they keep their place)."""
        with self._lock:
            rows = self._conn.execute(
                "UPDATE jobs SET status = 'queued' WHERE status = 'running' RETURNING id"
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

    def costs(self, job_id: str, since: int) -> tuple[list[IterationCost], list[EpochSummary]]:
        """Iterations after `since` and the epochs that ended after it, in order."""
        iterations = self._read(
            "SELECT epoch, iteration, cost FROM iterations WHERE job_id = ? AND iteration > ?"
            " ORDER BY iteration",
            (job_id, since),
        )
        epochs = self._read(
            f"SELECT {_EPOCH_COLUMNS} FROM epochs WHERE job_id = ? AND last_iteration > ?"
            " ORDER BY epoch",
            (job_id, since),
        )
        return [IterationCost(**row) for row in iterations], [EpochSummary(**row) for row in epochs]
