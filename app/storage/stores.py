"""Opening the stores the settings name: the one place the server and the workers get them.

The job store is SQLite in the data directory unless `CNN_DATABASE_URL` names a PostgreSQL;
both go through `SqlJobStore`, one schema and one set of queries.
"""

from app.settings import Settings
from app.storage.sql_jobs import SqlJobStore, database_url


def open_job_store(settings: Settings, *, pooled: bool = True) -> SqlJobStore:
    """The job store of `settings`; the caller closes it. `pooled=False` for a process that
    forks while it holds the store (see `SqlJobStore`)."""
    url = database_url(settings.database_url, settings.data_dir)
    return SqlJobStore(url, pooled=pooled)
