"""The service as `make run` starts it: a real uvicorn process on a free loopback port.

The full flow (train, follow the costs, predict a PNG), and a kill -9 of the whole process group
mid-training: the restarted service lists everything as before, predicts bit-identically, and
the interrupted job resumes to the same weights as a run that was never interrupted.
"""

import os
import signal
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.support.builders import holdout, png_bytes
from tests.support.server import (
    LiveServer,
    live_server,
    model_params,
    submit,
    wait_for_iteration,
    wait_for_job,
    worker_pids,
)

LONG_LENET = {
    "epochs": 6,
    "batch_size": 16,
    "validation_split": 0.1,
    "seed": 3,
    "optimizer": {"name": "adam", "learning_rate": 0.001},
}


def serve(data_dir: Path, log: Path) -> AbstractContextManager[tuple[LiveServer, httpx.Client]]:
    """A live server on `data_dir` with fast polling, and a client of it."""
    return live_server(data_dir, log, CNN_POLL_INTERVAL="0.05")


def predict_digits(client: httpx.Client, model_id: str, count: int) -> list[dict]:
    X, _ = holdout()
    files = [("files", (f"{i}.png", png_bytes(X[i]))) for i in range(count)]
    response = client.post(f"/models/{model_id}/predict", files=files)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_full_flow_train_follow_costs_predict(tmp_path: Path) -> None:
    with serve(tmp_path / "data", tmp_path / "server.log") as (_, client):
        job = submit(client, "mnist-sample", "lenet5", epochs=2, batch_size=32)
        since, seen = 0, []
        while True:
            costs = client.get(f"/jobs/{job['id']}/costs", params={"since": since}).json()
            seen += [point["iteration"] for point in costs["iterations"]]
            since = costs["last_iteration"]
            if costs["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert costs["status"] == "succeeded"
        assert seen == list(range(1, len(seen) + 1)) and len(seen) == 2 * 57
        model_id = client.get(f"/jobs/{job['id']}").json()["model_id"]
        _, labels = holdout()
        predictions = predict_digits(client, model_id, 20)
        correct = sum(p["label"] == labels[i] for i, p in enumerate(predictions))
        assert correct >= 16


def test_kill_9_mid_training_then_restart_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    with serve(data_dir, log) as (server, client):
        first = wait_for_job(client, submit(client, "mnist-sample", "tiny", epochs=1)["id"])
        before = predict_digits(client, first["model_id"], 5)
        job = submit(client, "mnist-sample", "lenet5", **LONG_LENET)
        queued = submit(client, "mnist-sample", "tiny", epochs=1)
        state = wait_for_iteration(client, job["id"], 113 + 10)  # epoch 1 is checkpointed
        assert state["status"] == "running" and state["progress"]["iteration"] < 6 * 113
        group = [server.process.pid, *worker_pids(server.process.pid)]
        assert len(group) == 2
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    deadline = time.monotonic() + 5  # a worker inside an fsync dies when the fsync returns
    while any(_alive(pid) for pid in group):
        assert time.monotonic() < deadline, "a worker outlived the killed server"
        time.sleep(0.05)

    with serve(data_dir, log) as (_, client):
        assert client.get(f"/models/{first['model_id']}").status_code == 200
        assert predict_digits(client, first["model_id"], 5) == before
        resumed = wait_for_job(client, job["id"], timeout=120)
        assert resumed["status"] == "succeeded", resumed
        assert wait_for_job(client, queued["id"])["status"] == "succeeded"
        costs = client.get(f"/jobs/{job['id']}/costs").json()
        assert [e["epoch"] for e in costs["epochs"]] == [1, 2, 3, 4, 5, 6]
        assert [i["iteration"] for i in costs["iterations"]] == list(range(1, 6 * 113 + 1))

        again = wait_for_job(
            client, submit(client, "mnist-sample", "lenet5", **LONG_LENET)["id"], timeout=120
        )
        expected = model_params(client, again["model_id"], tmp_path)
        got = model_params(client, resumed["model_id"], tmp_path)
        assert expected.keys() == got.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        uninterrupted = client.get(f"/jobs/{again['id']}/costs").json()
        assert [i["cost"] for i in uninterrupted["iterations"]] == [
            i["cost"] for i in costs["iterations"]
        ]


def test_workers_die_with_the_server(tmp_path: Path) -> None:
    with serve(tmp_path / "data", tmp_path / "server.log") as (server, client):
        job = submit(client, "mnist-sample", "lenet5", epochs=200)
        wait_for_job(client, job["id"], until={"running"})
        deadline = time.monotonic() + 10
        while not (workers := worker_pids(server.process.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(server.process.pid, signal.SIGKILL)  # the server alone, not its group
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 3
        while any(_alive(pid) for pid in workers):
            if time.monotonic() > deadline:
                pytest.fail(f"worker(s) {workers} outlived the server")
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
