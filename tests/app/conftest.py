"""Fixtures for the service tests: an app on a temporary data dir, small datasets and images."""

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.ids import new_id
from app.main import create_app
from app.settings import Settings
from app.storage.jobs import JobStore
from app.storage.layout import DataLayout
from app.storage.stores import open_job_store

REPO = Path(__file__).resolve().parents[2]
HOLDOUT = REPO / "tests" / "data" / "mnist_holdout.npz"

# Trains on a few hundred digits in well under a second per epoch.
TINY_ARCHITECTURE = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "conv", "filters": 4, "kernel_size": 5, "stride": 2, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
}
TINY_TRAINING = {
    "epochs": 2,
    "batch_size": 32,
    "validation_split": 0.1,
    "seed": 0,
    "optimizer": {"name": "adam", "learning_rate": 0.01},
}
TERMINAL = {"succeeded", "failed", "cancelled"}


def holdout() -> tuple[np.ndarray, np.ndarray]:
    """500 real MNIST digits that are not in the built-in sample: uint8 (N, 28, 28), labels."""
    with np.load(HOLDOUT) as data:
        return data["X"], data["y"]


def npz_bytes(X: np.ndarray, y: np.ndarray, **extra: np.ndarray) -> bytes:
    """An uploadable .npz of X and y."""
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y, **extra)
    return buffer.getvalue()


def digits_npz(n: int = 300) -> bytes:
    """The first `n` holdout digits as an uploadable .npz."""
    X, y = holdout()
    return npz_bytes(X[:n], y[:n])


def png_bytes(pixels: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    """`pixels` (H, W) uint8 encoded as an image, optionally converted to `mode` first."""
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def image_zip_bytes(per_class: int = 4) -> bytes:
    """A .zip of one folder per class ("3", "7") of PNG digits."""
    X, y = holdout()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in (3, 7):
            for i, index in enumerate(np.flatnonzero(y == label)[:per_class]):
                archive.writestr(f"digits/{label}/{i}.png", png_bytes(X[index]))
    return buffer.getvalue()


def wait_for_job(
    client: TestClient | httpx.Client, job_id: str, timeout: float = 60, until: set[str] = TERMINAL
) -> dict:
    """Poll a job until its status is in `until`; the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def wait_for_iteration(
    client: TestClient | httpx.Client, job_id: str, iteration: int, timeout: float = 60
) -> dict:
    """Poll a running job until it has recorded `iteration`; the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["progress"]["iteration"] >= iteration or job["status"] in TERMINAL:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach iteration {iteration} in {timeout} s")


def submit(
    client: TestClient | httpx.Client,
    dataset_id: str = "mnist-sample",
    architecture: dict | str = "lenet5",
    **training: object,
) -> dict:
    """POST a job (tiny defaults); the 202 body."""
    if architecture == "tiny":
        architecture = TINY_ARCHITECTURE
    body = {
        "dataset_id": dataset_id,
        "architecture": architecture,
        "training": {**TINY_TRAINING, **training},
    }
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def worker_pids(parent: int | None = None) -> list[int]:
    """Pids of the live training workers under `parent` (default: this process): the children
    of the fork server (not their own shard helpers), zombies excluded."""
    pids = []
    for forkserver in psutil.Process(parent).children():
        try:
            if "forkserver" not in " ".join(forkserver.cmdline()):
                continue
            pids += [p.pid for p in forkserver.children() if p.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            continue
    return pids


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
