"""Fixtures for the service tests: an app on a temporary data dir, a trained model."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support.builders import digits_npz
from tests.support.server import submit, wait_for_job


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
