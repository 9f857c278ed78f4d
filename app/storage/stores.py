"""Opening the stores the settings name: the one place the server and the workers get them.

The job store is SQLite in the data directory (`SqliteJobStore`); a server database for many
machines plugs in here, behind the same `JobStore` protocol.
"""

from app.settings import Settings
from app.storage.jobs import JobStore
from app.storage.layout import DataLayout
from app.storage.sqlite_jobs import SqliteJobStore


def open_job_store(settings: Settings) -> JobStore:
    """The job store of `settings`; the caller closes it."""
    return SqliteJobStore(DataLayout(settings.data_dir).jobs_db)
