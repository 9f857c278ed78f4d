"""Driving the service under test: a live uvicorn process, jobs submitted and polled, workers.

`LiveServer` and `live_server` are the benchmarks' own (one copy of the launcher in the tree).
"""

import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from fastapi.testclient import TestClient

from benchmarks.live_server import REPO, LiveServer, live_server
from cnn_core import Network
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING

__all__ = [
    "REPO",
    "TERMINAL",
    "LiveServer",
    "live_server",
    "model_params",
    "submit",
    "wait_for_iteration",
    "wait_for_job",
    "worker_pids",
]

TERMINAL = {"succeeded", "failed", "cancelled"}


def model_params(client: httpx.Client, model_id: str, tmp_path: Path) -> dict[str, np.ndarray]:
    """The parameters of a model as the server's download serves it."""
    path = tmp_path / f"{model_id}.npz"
    path.write_bytes(client.get(f"/models/{model_id}/download").content)
    return Network.load(path).params


def submit(
    client: TestClient | httpx.Client,
    dataset_id: str = "mnist-sample",
    architecture: dict | str = "lenet5",
    **training: object,
) -> dict:
    """POST a job (tiny defaults; architecture "tiny" is `TINY_ARCHITECTURE`); the 202 body."""
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
