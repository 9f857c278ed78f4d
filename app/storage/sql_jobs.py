"""`JobStore` on SQLAlchemy Core: one schema and one set of queries for SQLite and PostgreSQL.

SQLite (the default, one file in the data directory, WAL) serves one machine: the server reads
while its worker processes write, every write one short `BEGIN IMMEDIATE` transaction. WAL does
not work over a network file system, so several machines share a PostgreSQL instead
(`postgresql+psycopg://`), where the queue is claimed with `FOR UPDATE SKIP LOCKED` and the
bounded queue is kept under a transaction-scoped advisory lock, so replicas never overshoot it.

Leases: a job claimed by a queue worker carries `lease_expires_at`, which its worker renews;
`expire_leases` puts a job whose lease ran out back in the queue (or fails it after
`max_losses` lost workers). Every claim increments the job's `attempt`, and the writes a worker
makes (`start_run`, costs, `finish`, `requeue`) name the attempt they belong to: once another
claim has taken the job over, they change nothing and say so. Times are Unix seconds from the
writer's clock, so the hosts of one deployment keep their clocks in sync (NTP).

The schema carries a version (table `schema_version`): a new database gets `SCHEMA_VERSION`; an
older one (version 2, or a SQLite file of the sqlite3 store before it: `PRAGMA user_version` 0
or 1) is upgraded in place by adding the columns it lacks, keeping its jobs; anything else is
refused with a message saying so.
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

from app.storage.jobs import (
    MAX_STORED_ITERATIONS,
    RECENT_ITERATIONS,
    EpochSummary,
    IterationCost,
    JobRecord,
    JobStatus,
    finite_or_none,
)

SCHEMA_VERSION = 3  # 2: leases and workers; 3: epochs.learning_rate

metadata = MetaData()

jobs_table = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("name", Text),
    Column("dataset_id", String(64), nullable=False),
    Column("architecture", Text, nullable=False),
    Column("training", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("epoch", Integer, nullable=False, server_default="0"),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("iterations_per_epoch", Integer),
    Column("run_started_at", Float),
    Column("run_start_iteration", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("model_id", String(64)),
    Column("threads", Integer),
    Column("stop_requested", Boolean, nullable=False, server_default="0"),
    # added in version 2: claims, leases and their losses
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("worker", Text),
    Column("lease_expires_at", Float),
    Column("lease_losses", Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)
iterations_table = Table(
    "iterations",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("iteration", Integer, primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("cost", Float),
    sqlite_with_rowid=False,
)
epochs_table = Table(
    "epochs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("cost", Float),
    Column("train_accuracy", Float),
    Column("val_cost", Float),
    Column("val_accuracy", Float),
    Column("seconds", Float),
    Column("last_iteration", Integer, nullable=False),
    Column("learning_rate", Float),  # added in version 3
    sqlite_with_rowid=False,
)
workers_table = Table(
    "workers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)
version_table = Table("schema_version", metadata, Column("version", Integer, nullable=False))

# The columns older versions lacked, by table, as ALTER TABLE adds them (an upgrade adds the
# ones a database does not have, so every older version takes the same path).
_ADDED_COLUMNS = {
    "jobs": (
        ("threads", "INTEGER"),
        ("stop_requested", "BOOLEAN NOT NULL DEFAULT FALSE"),
        ("attempt", "INTEGER NOT NULL DEFAULT 0"),
        ("worker", "TEXT"),
        ("lease_expires_at", "FLOAT"),
        ("lease_losses", "INTEGER NOT NULL DEFAULT 0"),
    ),
    "epochs": (("learning_rate", "FLOAT"),),
}
# What a jobs table of the sqlite3 store (versions 0 and 1) certainly has.
_SQLITE3_STORE_COLUMNS = {"seq", "id", "status", "training", "iteration"}
# An index for the queue and the lease sweep (status first, then queue order).
_STATUS_INDEX = "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq)"
# The advisory lock (a PostgreSQL-wide integer) held while the schema is set up or a job is
# queued: the first keeps replicas starting together from racing, the second keeps the bound.
_SCHEMA_LOCK, _QUEUE_LOCK = 731_000_001, 731_000_002

_EPOCH_FIELDS = [f.name for f in fields(EpochSummary)]
# The record's fields that a row holds as they are (the others are decoded in `_record`).
_RECORD_COLUMNS = [
    f.name
    for f in fields(JobRecord)
    if f.name not in ("architecture", "training", "status", "stop_requested", "latest")
    and f.name != "queue_position"
]


class JobStoreVersionError(RuntimeError):
    """The job database was written by a build with another schema."""


@dataclass(frozen=True)
class Claim:
    """A job a worker took from the queue, and the attempt its writes must name."""

    job_id: str
    attempt: int


@dataclass(frozen=True)
class LiveWorker:
    name: str
    started_at: float
    seen_at: float


def database_url(url: str | None, data_dir: Path) -> URL:
    """The SQLAlchemy URL of `CNN_DATABASE_URL`: SQLite in `data_dir` when unset, and
    `postgresql://` (or `postgres://`) read as PostgreSQL through psycopg 3."""
    if not url:
        return URL.create("sqlite", database=str(data_dir / "jobs.sqlite3"))
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(
            f"CNN_DATABASE_URL names {parsed.get_backend_name()!r}: use postgresql://user:"
            "password@host:port/db, or leave it unset for SQLite in the data directory"
        )
    return parsed


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy begin SQLite's transactions itself: `BEGIN IMMEDIATE` for a write (the
    lock taken up front, so two writers never deadlock on an upgrade), `BEGIN` for a read."""

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from the driver
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SqlJobStore:
    """`JobStore` on SQLite or PostgreSQL; safe to share between threads of one process.

    `pooled=False` keeps no connection open between calls: for a process that forks (an RQ
    worker), whose children must not inherit a live connection."""

    def __init__(self, url: URL | str, *, pooled: bool = True) -> None:
        url = make_url(url)
        self.dialect = url.get_backend_name()
        options: dict[str, Any] = {}
        if self.dialect == "sqlite":
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            options["pool_pre_ping"] = True  # a restarted database costs one failed ping
        if not pooled:
            options["poolclass"] = NullPool
        self._engine = create_engine(url, **options)
        if self.dialect == "sqlite":
            _sqlite_transactions(self._engine)
        self._statements: list[str] | None = None
        event.listen(self._engine, "before_cursor_execute", self._trace)
        self._open_schema(url)

    # ------------------------------------------------------------------ plumbing

    def _trace(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self._statements is not None and not statement.startswith(("BEGIN", "SELECT pg_")):
            self._statements.append(statement)

    @contextmanager
    def traced(self) -> Iterator[list[str]]:
        """The SQL statements this store runs inside the block, to check how many a call takes."""
        self._statements = []
        try:
            yield self._statements
        finally:
            self._statements = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A connection inside one write transaction, committed unless an error escapes."""
        with self._engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def _lock(self, conn: Connection, key: int) -> None:
        """Hold PostgreSQL's advisory lock `key` until the transaction ends (SQLite's write
        transactions are exclusive already)."""
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def _upsert(
        self,
        conn: Connection,
        table: Table,
        rows: list[dict],
        keys: list[str],
        replace: list[str] | None = None,
    ) -> None:
        """Insert `rows`; where a row with the same `keys` exists, replace its `replace`
        columns (by default all the others) instead."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        statement = dialect.insert(table)
        replace = replace or [c.name for c in table.c if c.name not in keys]
        replaced = {name: statement.excluded[name] for name in replace}
        conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=replaced), rows)

    def _open_schema(self, url: URL) -> None:
        """Create the schema in an empty database, upgrade a version-1 SQLite file, and refuse
        any other version."""
        with self._write() as conn:
            self._lock(conn, _SCHEMA_LOCK)
            tables = set(inspect(conn).get_table_names())
            if "schema_version" in tables:
                version = conn.execute(select(version_table.c.version)).scalar_one()
                if version == 2:
                    self._add_missing_columns(conn)
                    conn.execute(update(version_table).values(version=SCHEMA_VERSION))
                    version = SCHEMA_VERSION
            elif self.dialect == "sqlite" and "jobs" in tables:
                version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
                columns = {c["name"] for c in inspect(conn).get_columns("jobs")}
                if version in (0, 1) and columns >= _SQLITE3_STORE_COLUMNS:
                    self._add_missing_columns(conn)
                    metadata.create_all(conn, tables=[workers_table, version_table])
                    conn.execute(insert(version_table).values(version=SCHEMA_VERSION))
                    version = SCHEMA_VERSION
            elif tables:
                version = 0
            else:
                metadata.create_all(conn)
                conn.exec_driver_sql(_STATUS_INDEX)
                conn.execute(insert(version_table).values(version=SCHEMA_VERSION))
                version = SCHEMA_VERSION
            if self.dialect == "sqlite":  # what sqlite3 readers of the file see
                conn.exec_driver_sql(f"PRAGMA user_version = {version}")
        if version != SCHEMA_VERSION:
            self._engine.dispose()
            where = url.render_as_string(hide_password=True)
            raise JobStoreVersionError(
                f"{where} holds jobs in schema version {version} (0: a pre-release build) and "
                f"this build reads version {SCHEMA_VERSION}: move the file away (or use a new "
                "database) to start afresh"
            )

    @staticmethod
    def _add_missing_columns(conn) -> None:
        """Bring an older schema's tables up to this version's columns."""
        for table, added in _ADDED_COLUMNS.items():
            have = {c["name"] for c in inspect(conn).get_columns(table)}
            for name, kind in added:
                if name not in have:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        """Close every connection."""
        self._engine.dispose()

    # ------------------------------------------------------------------ reading

    def _select_records(self):
        """Job rows with what a record shows besides them, in one query: the queue position of
        a queued job and the summary of its latest epoch (as latest_<field>, NULL without)."""
        jobs = jobs_table
        ahead = jobs_table.alias("ahead")
        latest = epochs_table.alias("latest")
        newest_epoch = (
            select(func.max(epochs_table.c.epoch))
            .where(epochs_table.c.job_id == jobs.c.id)
            .scalar_subquery()
        )
        position = (
            select(func.count())
            .select_from(ahead)
            .where(ahead.c.status == "queued", ahead.c.seq <= jobs.c.seq)
            .scalar_subquery()
        )
        return select(
            jobs,
            case((jobs.c.status == "queued", position)).label("queue_position"),
            *(latest.c[f].label(f"latest_{f}") for f in _EPOCH_FIELDS),
        ).select_from(
            jobs.outerjoin(
                latest, and_(latest.c.job_id == jobs.c.id, latest.c.epoch == newest_epoch)
            )
        )

    @staticmethod
    def _record(row: Any) -> JobRecord:
        """The record of a row selected by `_select_records`."""
        row = row._mapping
        latest = None
        if row["latest_epoch"] is not None:
            latest = EpochSummary(**{f: row[f"latest_{f}"] for f in _EPOCH_FIELDS})
        return JobRecord(
            **{name: row[name] for name in _RECORD_COLUMNS},
            queue_position=row["queue_position"],
            architecture=json.loads(row["architecture"]),
            training=json.loads(row["training"]),
            status=JobStatus(row["status"]),
            stop_requested=bool(row["stop_requested"]),
            latest=latest,
        )

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        with self._read() as conn:
            row = conn.execute(self._select_records().where(jobs_table.c.id == job_id)).first()
        return self._record(row) if row else None

    def list_page(
        self, status: JobStatus | None, limit: int, offset: int
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and the total count matching `status`."""
        where = [jobs_table.c.status == status.value] if status else []
        with self._read() as conn:
            total = conn.execute(
                select(func.count()).select_from(jobs_table).where(*where)
            ).scalar_one()
            rows = conn.execute(
                self._select_records()
                .where(*where)
                .order_by(jobs_table.c.seq.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return [self._record(row) for row in rows], total

    def count(self, status: JobStatus) -> int:
        """How many jobs have `status`."""
        with self._read() as conn:
            return conn.execute(
                select(func.count()).select_from(jobs_table).where(jobs_table.c.status == status)
            ).scalar_one()

    def is_dataset_in_use(self, dataset_id: str) -> bool:
        """Whether a queued or running job trains on `dataset_id`."""
        with self._read() as conn:
            return (
                conn.execute(
                    select(jobs_table.c.id)
                    .where(
                        jobs_table.c.dataset_id == dataset_id,
                        jobs_table.c.status.in_(("queued", "running")),
                    )
                    .limit(1)
                ).first()
                is not None
            )

    def costs(
        self, job_id: str, since: int, *, max_points: int | None = None, limit: int | None = None
    ) -> tuple[list[IterationCost], list[EpochSummary]]:
        """Iterations after `since` and the epochs that ended after it, in order. With
        `max_points`, the iterations are thinned to at most that many, evenly by rank, the
        last one always kept; with `limit`, only the first `limit` (after thinning)."""
        it, ep = iterations_table.c, epochs_table.c
        after = and_(it.job_id == job_id, it.iteration > since)
        with self._read() as conn:
            query = select(it.epoch, it.iteration, it.cost).where(after).order_by(it.iteration)
            if max_points is not None:
                count = conn.execute(
                    select(func.count()).select_from(iterations_table).where(after)
                ).scalar_one()
                stride = 1 if count <= max_points else -(-count // (max_points - 1))
                ranked = (
                    select(
                        it.epoch,
                        it.iteration,
                        it.cost,
                        (func.row_number().over(order_by=it.iteration) - 1).label("k"),
                    )
                    .where(after)
                    .subquery()
                )
                query = (
                    select(ranked.c.epoch, ranked.c.iteration, ranked.c.cost)
                    .where((ranked.c.k % stride == 0) | (ranked.c.k == count - 1))
                    .order_by(ranked.c.iteration)
                )
            if limit is not None:
                query = query.limit(limit)
            iterations = conn.execute(query).all()
            epochs = conn.execute(
                select(*(ep[f] for f in _EPOCH_FIELDS))
                .where(ep.job_id == job_id, ep.last_iteration > since)
                .order_by(ep.epoch)
            ).all()
        return (
            [IterationCost(**row._mapping) for row in iterations],
            [EpochSummary(**row._mapping) for row in epochs],
        )

    @staticmethod
    def _thin_old_iterations(conn: Connection, job_id: str) -> None:
        """The retention policy (`app.storage.jobs`): past `MAX_STORED_ITERATIONS` rows, drop
        every other row older than the most recent `RECENT_ITERATIONS` (the first row stays)."""
        it = iterations_table.c
        count = conn.execute(
            select(func.count()).select_from(iterations_table).where(it.job_id == job_id)
        ).scalar_one()
        if count <= MAX_STORED_ITERATIONS:
            return
        oldest = (
            select(it.iteration, func.row_number().over(order_by=it.iteration).label("k"))
            .where(it.job_id == job_id)
            .order_by(it.iteration)
            .limit(count - RECENT_ITERATIONS)
            .subquery()
        )
        every_other = select(oldest.c.iteration).where(oldest.c.k % 2 == 0)
        conn.execute(
            delete(iterations_table).where(it.job_id == job_id, it.iteration.in_(every_other))
        )

    # ------------------------------------------------------------------ the queue

    def create(
        self,
        job_id: str,
        name: str | None,
        dataset_id: str,
        architecture: dict[str, Any],
        training: dict[str, Any],
        threads: int,
        *,
        max_queued: int | None = None,
    ) -> JobRecord | None:
        """Insert a queued job at the back of the queue; None when `max_queued` jobs wait
        already. It trains with `threads` threads whenever it runs: the weights depend on the
        count, so a resumed run uses the same."""
        with self._write() as conn:
            self._lock(conn, _QUEUE_LOCK)
            if max_queued is not None and self._count(conn, "queued") >= max_queued:
                return None
            conn.execute(
                insert(jobs_table).values(
                    id=job_id,
                    name=name,
                    dataset_id=dataset_id,
                    architecture=json.dumps(architecture),
                    training=json.dumps(training),
                    status="queued",
                    created_at=time.time(),
                    threads=threads,
                )
            )
        return self.get(job_id)

    @staticmethod
    def _count(conn: Connection, status: str) -> int:
        return conn.execute(
            select(func.count()).select_from(jobs_table).where(jobs_table.c.status == status)
        ).scalar_one()

    def claim(self, worker: str | None = None, lease_seconds: float | None = None) -> Claim | None:
        """Move the oldest queued job to running for `worker` (holding a lease of
        `lease_seconds` when given) and return it with its new attempt number."""
        now = time.time()
        oldest = (
            select(jobs_table.c.seq)
            .where(jobs_table.c.status == "queued")
            .order_by(jobs_table.c.seq)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self._write() as conn:
            row = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.seq == oldest)
                .values(
                    status="running",
                    started_at=func.coalesce(jobs_table.c.started_at, now),
                    attempt=jobs_table.c.attempt + 1,
                    worker=worker,
                    lease_expires_at=None if lease_seconds is None else now + lease_seconds,
                    stop_requested=False,
                )
                .returning(jobs_table.c.id, jobs_table.c.attempt)
            ).first()
        return Claim(row.id, row.attempt) if row else None

    def claim_next(self) -> str | None:
        """Move the oldest queued job to running and return its id."""
        claim = self.claim()
        return claim.job_id if claim else None

    def _running(self, job_id: str, attempt: int | None):
        """The WHERE clause of a write to a running job, by `attempt` when given."""
        conditions = [jobs_table.c.id == job_id, jobs_table.c.status == "running"]
        if attempt is not None:
            conditions.append(jobs_table.c.attempt == attempt)
        return and_(*conditions)

    def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a queued or running job; the status it had before, or None if unknown."""
        with self._write() as conn:
            before = conn.execute(
                select(jobs_table.c.status).where(jobs_table.c.id == job_id).with_for_update()
            ).scalar()
            if before in ("queued", "running"):
                conn.execute(
                    update(jobs_table)
                    .where(jobs_table.c.id == job_id)
                    .values(status="cancelled", finished_at=time.time(), lease_expires_at=None)
                )
        return JobStatus(before) if before else None

    def request_stop(self, job_id: str) -> bool:
        """Ask a running job's worker to checkpoint and stop (it goes back to the queue);
        False if the job is not running."""
        with self._write() as conn:
            changed = conn.execute(
                update(jobs_table).where(self._running(job_id, None)).values(stop_requested=True)
            ).rowcount
        return changed == 1

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        model_id: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Move a running job (of `attempt`, when given) to a terminal `status`; False if it
        was no longer running, or had been taken over."""
        with self._write() as conn:
            changed = conn.execute(
                update(jobs_table)
                .where(self._running(job_id, attempt))
                .values(
                    status=status.value,
                    error=error,
                    model_id=model_id,
                    finished_at=time.time(),
                    lease_expires_at=None,
                )
            ).rowcount
        return changed == 1

    def requeue(self, job_id: str, attempt: int | None = None) -> bool:
        """Put a running job (of `attempt`, when given) back in the queue at its old place;
        False if not running or taken over."""
        with self._write() as conn:
            changed = conn.execute(
                update(jobs_table)
                .where(self._running(job_id, attempt))
                .values(status="queued", stop_requested=False, worker=None, lease_expires_at=None)
            ).rowcount
        return changed == 1

    def requeue_running(self) -> list[str]:
        """Put jobs a previous server left running back in the queue (they keep their place)."""
        with self._write() as conn:
            rows = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.status == "running")
                .values(status="queued", stop_requested=False, worker=None, lease_expires_at=None)
                .returning(jobs_table.c.id)
            ).all()
        return [row.id for row in rows]

    # ------------------------------------------------------------------ leases and workers

    def renew_lease(self, job_id: str, attempt: int, lease_seconds: float) -> bool:
        """Extend the lease of `attempt` on a running job; False once it is lost (the job was
        cancelled, finished or taken over)."""
        with self._write() as conn:
            changed = conn.execute(
                update(jobs_table)
                .where(self._running(job_id, attempt))
                .values(lease_expires_at=time.time() + lease_seconds)
            ).rowcount
        return changed == 1

    def request_stop_of(self, worker: str) -> list[str]:
        """Ask `worker` to checkpoint and stop the jobs it runs (it is shutting down)."""
        with self._write() as conn:
            rows = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.worker == worker, jobs_table.c.status == "running")
                .values(stop_requested=True)
                .returning(jobs_table.c.id)
            ).all()
        return [row.id for row in rows]

    def expire_leases(self, max_losses: int) -> tuple[list[str], list[str]]:
        """Take back running jobs whose lease has run out: (re-queued, failed). A job whose
        workers were lost `max_losses` times fails, as it probably kills them."""
        now = time.time()
        expired = and_(
            jobs_table.c.status == "running",
            jobs_table.c.lease_expires_at.is_not(None),
            jobs_table.c.lease_expires_at < now,
        )
        with self._write() as conn:
            failed = conn.execute(
                update(jobs_table)
                .where(expired, jobs_table.c.lease_losses + 1 >= max_losses)
                .values(
                    status="failed",
                    lease_losses=jobs_table.c.lease_losses + 1,
                    finished_at=now,
                    lease_expires_at=None,
                    error=f"its worker was lost {max_losses} times (killed, out of memory, or "
                    "its host went away); not retried again",
                )
                .returning(jobs_table.c.id)
            ).all()
            requeued = conn.execute(
                update(jobs_table)
                .where(expired)
                .values(
                    status="queued",
                    lease_losses=jobs_table.c.lease_losses + 1,
                    stop_requested=False,
                    worker=None,
                    lease_expires_at=None,
                )
                .returning(jobs_table.c.id)
            ).all()
        return [row.id for row in requeued], [row.id for row in failed]

    def worker_seen(self, name: str) -> None:
        """Record that worker `name` is alive."""
        now = time.time()
        with self._write() as conn:
            self._upsert(
                conn,
                workers_table,
                [{"name": name, "started_at": now, "seen_at": now}],
                ["name"],
                replace=["seen_at"],  # a worker keeps its first start time
            )

    def worker_gone(self, name: str) -> None:
        """Forget worker `name` (it stopped)."""
        with self._write() as conn:
            conn.execute(delete(workers_table).where(workers_table.c.name == name))

    def live_workers(self, within: float) -> list[LiveWorker]:
        """Workers seen in the last `within` seconds, oldest first; older entries are dropped."""
        cutoff = time.time() - within
        with self._write() as conn:
            conn.execute(delete(workers_table).where(workers_table.c.seen_at < cutoff))
            rows = conn.execute(select(workers_table).order_by(workers_table.c.started_at)).all()
        return [LiveWorker(**row._mapping) for row in rows]

    # ------------------------------------------------------------------ a run's history

    def start_run(
        self,
        job_id: str,
        epoch: int,
        iteration: int,
        iterations_per_epoch: int,
        attempt: int | None = None,
    ) -> bool:
        """A worker's first iteration (`iteration` of `epoch`; later than 1 when it resumes from
        a checkpoint): drop the history it will redo, the costs from `iteration` on and the
        summaries from `epoch` on, which a run killed after its checkpoint had recorded. False
        (and nothing done) when `attempt` is given and no longer holds the job."""
        with self._write() as conn:
            conditions = [jobs_table.c.id == job_id]
            if attempt is not None:
                conditions.append(self._running(job_id, attempt))
            changed = conn.execute(
                update(jobs_table)
                .where(*conditions)
                .values(
                    run_started_at=time.time(),
                    run_start_iteration=iteration - 1,
                    iterations_per_epoch=iterations_per_epoch,
                )
            ).rowcount
            if not changed:
                return False
            conn.execute(
                delete(iterations_table).where(
                    iterations_table.c.job_id == job_id, iterations_table.c.iteration >= iteration
                )
            )
            conn.execute(
                delete(epochs_table).where(
                    epochs_table.c.job_id == job_id, epochs_table.c.epoch >= epoch
                )
            )
        return True

    def record_iterations(
        self, job_id: str, rows: list[IterationCost], attempt: int | None = None
    ) -> bool:
        """Append iteration costs and move the job's progress to the last one; False (and
        nothing written) when `attempt` is given and no longer holds the job."""
        last = rows[-1]
        conditions = [jobs_table.c.id == job_id]
        if attempt is not None:
            conditions.append(self._running(job_id, attempt))
        with self._write() as conn:
            # The job's row first: under PostgreSQL this locks it, so a claim taking the job
            # over waits for this transaction, and a write after the claim finds no row.
            changed = conn.execute(
                update(jobs_table)
                .where(*conditions)
                .values(epoch=last.epoch, iteration=last.iteration)
            ).rowcount
            if not changed:
                return False
            self._upsert(
                conn,
                iterations_table,
                [
                    {
                        "job_id": job_id,
                        "iteration": r.iteration,
                        "epoch": r.epoch,
                        "cost": finite_or_none(r.cost),
                    }
                    for r in rows
                ],
                ["job_id", "iteration"],
            )
            self._thin_old_iterations(conn, job_id)
        return True

    def record_epoch(self, job_id: str, summary: EpochSummary, attempt: int | None = None) -> bool:
        """Store one epoch's summary (replacing an earlier one for the same epoch); False (and
        nothing written) when `attempt` is given and no longer holds the job."""
        row = {f: getattr(summary, f) for f in _EPOCH_FIELDS}
        row.update({f: finite_or_none(row[f]) for f in _EPOCH_FIELDS if f != "last_iteration"})
        row["epoch"], row["job_id"] = summary.epoch, job_id
        with self._write() as conn:
            if attempt is not None:
                held = conn.execute(
                    select(jobs_table.c.id).where(self._running(job_id, attempt)).with_for_update()
                ).first()
                if held is None:
                    return False
            self._upsert(conn, epochs_table, [row], ["job_id", "epoch"])
        return True
