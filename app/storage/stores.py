"""Opening the stores the settings name: the one place the server and the workers get them.

The job store is SQLite in the data directory unless `CNN_DATABASE_URL` names a PostgreSQL;
both go through `SqlJobStore`, one schema and one set of queries. Datasets and models are files
in the data directory; what start-up repairs move aside goes to its `quarantine/` folder.
"""

from app.settings import Settings
from app.storage.datasets import FileDatasetStore
from app.storage.integrity import Problems
from app.storage.layout import DataLayout
from app.storage.models import FileModelStore
from app.storage.sql_jobs import SqlJobStore, database_url


def open_job_store(settings: Settings, *, pooled: bool = True) -> SqlJobStore:
    """The job store of `settings`; the caller closes it. `pooled=False` for a process that
    forks while it holds the store (see `SqlJobStore`)."""
    url = database_url(settings.database_url, settings.data_dir)
    return SqlJobStore(url, pooled=pooled)


def open_dataset_store(settings: Settings, problems: Problems) -> FileDatasetStore:
    """The dataset store of `settings`; unreadable records go to `problems`."""
    layout = DataLayout(settings.data_dir)
    return FileDatasetStore(
        layout.datasets, quarantine_dir=layout.quarantine / "datasets", problems=problems
    )


def open_model_store(settings: Settings, problems: Problems) -> FileModelStore:
    """The model store of `settings`; unreadable records go to `problems`."""
    layout = DataLayout(settings.data_dir)
    return FileModelStore(
        layout.models, quarantine_dir=layout.quarantine / "models", problems=problems
    )
