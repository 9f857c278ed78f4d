"""Fixtures for the service tests: an app on a temporary data dir, a trained model, a job store."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.ids import new_id
from app.main import create_app
from app.settings import Settings
from app.storage.jobs import JobStore
from app.storage.layout import DataLayout
from app.storage.stores import open_job_store
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING, digits_npz
from tests.support.server import submit, wait_for_job
from tests.support.servers import PostgresServer, RedisServer, running

# Starlette's TestClient names its server "testserver": allow it as an operator would allow a
# deployment's host name (the Host-header tests set `allowed_hosts` themselves).
os.environ.setdefault("CNN_ALLOWED_HOSTS", '["testserver"]')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data dir, with fast polling."""
    return Settings(data_dir=tmp_path / "data", poll_interval=0.05)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of an app started (lifespan included) on `settings`."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """A client whose app holds one model trained on 300 uploaded digits; (client, model)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("trained") / "data", poll_interval=0.05)
    with TestClient(create_app(settings)) as test_client:
        dataset = test_client.post("/datasets", files={"files": ("d.npz", digits_npz())}).json()
        job = submit(test_client, dataset["id"], "tiny", epochs=3)
        job = wait_for_job(test_client, job["id"])
        assert job["status"] == "succeeded", job
        yield test_client, test_client.get(f"/models/{job['model_id']}").json()


# --------------------------------------------------------------------------- job store and workers

STORE_TRAINING = {**TINY_TRAINING, "epochs": 3, "early_stopping": None}  # as admission stores it


@pytest.fixture
def layout(settings: Settings) -> DataLayout:
    """The data directory of `settings`, created."""
    layout = DataLayout(settings.data_dir)
    layout.create()
    return layout


@pytest.fixture
def jobs(settings: Settings, layout: DataLayout) -> Iterator[JobStore]:
    """The job store of `settings`, as the server and the workers open it."""
    store = open_job_store(settings)
    yield store
    store.close()


def add_job(jobs: JobStore, name: str | None = None, threads: int = 1, **training: object) -> str:
    """Queue a tiny job on mnist-sample; its id."""
    job_id = new_id()
    jobs.create(
        job_id, name, "mnist-sample", TINY_ARCHITECTURE, {**STORE_TRAINING, **training}, threads
    )
    return job_id


# --------------------------------------------------------------------------- private servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (each test takes a database of its own)."""
    with running(PostgresServer()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session; tests that restart it start their own."""
    with running(RedisServer()) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """`CNN_DATABASE_URL` for each job store: unset (SQLite) and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database()
