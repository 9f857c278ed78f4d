"""Training under faults, against a real server: a job that needs too much memory, a worker
killed with kill -9, and SIGTERM to the server mid-epoch.

The server tests run a real uvicorn process (see `tests.support.server`); each kills its process
group on the way out.
"""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.settings import Settings
from app.storage.jobs import JobStatus
from app.storage.layout import DataLayout
from app.storage.stores import open_job_store
from cnn_core.files import load_archive
from cnn_core.training import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from tests.support.server import (
    REPO,
    LiveServer,
    live_server,
    model_params,
    submit,
    wait_for_iteration,
    wait_for_job,
    worker_pids,
)

# LeNet-5 on mnist-sample: 1,800 training digits in 113 iterations per epoch.
LENET = {
    "epochs": 12,
    "batch_size": 16,
    "validation_split": 0.1,
    "seed": 5,
    "optimizer": {"name": "adam", "learning_rate": 0.001},
}
PER_EPOCH = 113
STOP_DEADLINE_S = 9.0  # docker stop sends SIGKILL 10 s after SIGTERM


# --------------------------------------------------------------------------- memory limit


FAULT_INJECTION = REPO / "tests" / "app" / "fault_injection"  # see its sitecustomize.py


def test_job_over_the_worker_memory_limit_fails_out_of_memory_and_the_server_carries_on(
    tmp_path: Path,
) -> None:
    # Jobs named "greedy" allocate 2,048 MB before they train, under a limit of 1,024 MB.
    path = os.pathsep.join([str(FAULT_INJECTION), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {"CNN_WORKER_MEMORY_MB": "1024", "PYTHONPATH": path}
    with live_server(tmp_path / "data", tmp_path / "server.log", **env) as (_, client):
        greedy = client.post(
            "/jobs", json={"dataset_id": "mnist-sample", "architecture": "lenet5", "name": "greedy"}
        ).json()
        following = submit(client, "mnist-sample", "tiny", epochs=1)
        failed = wait_for_job(client, greedy["id"])
        assert failed["status"] == "failed" and failed["model_id"] is None
        assert failed["error"].startswith("out of memory"), failed["error"]
        assert client.get("/health").json()["status"] == "ok"
        assert wait_for_job(client, following["id"])["status"] == "succeeded"
        assert [m["job_id"] for m in client.get("/models").json()["models"]] == [following["id"]]


# --------------------------------------------------------------------------- kill -9 of a worker


def test_worker_killed_with_kill_9_fails_its_job_within_seconds_and_the_next_job_runs(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with live_server(data_dir, tmp_path / "server.log") as (server, client):
        doomed = submit(client, "mnist-sample", "lenet5", **{**LENET, "epochs": 200})
        following = submit(client, "mnist-sample", "tiny", epochs=1)
        wait_for_iteration(client, doomed["id"], PER_EPOCH + 20)  # past a checkpoint
        [pid] = worker_pids(server.process.pid)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        job = wait_for_job(client, doomed["id"], timeout=10)
        noticed = time.monotonic() - killed
        print(f"job failed {noticed:.2f} s after its worker was killed")
        assert noticed < 3
        assert job["status"] == "failed" and job["model_id"] is None
        assert job["error"] == "worker process died (signal 9, SIGKILL)"
        iterations = client.get(f"/jobs/{doomed['id']}/costs").json()["iterations"]
        assert [i["iteration"] for i in iterations] == list(range(1, len(iterations) + 1))
        assert len(iterations) >= PER_EPOCH + 20
        assert DataLayout(data_dir).latest_checkpoint(doomed["id"]) is None
        assert client.get("/health").json()["status"] == "ok"
        assert wait_for_job(client, following["id"])["status"] == "succeeded"
        assert [m["job_id"] for m in client.get("/models").json()["models"]] == [following["id"]]


# --------------------------------------------------------------------------- SIGTERM to the server


def follow_events(server: LiveServer, job_id: str, ended: threading.Event) -> None:
    """Read the job's event stream until the server ends it."""
    try:
        with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", timeout=30) as response:
            for _ in response.iter_lines():
                pass
    except httpx.HTTPError:
        pass
    ended.set()


def test_sigterm_checkpoints_mid_epoch_exits_within_9s_and_the_job_resumes_to_the_same_weights(
    tmp_path: Path,
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    server = LiveServer(data_dir, log)
    try:
        server.start()
        with server.client() as client:
            job = submit(client, "mnist-sample", "lenet5", **LENET)
            queued = submit(client, "mnist-sample", "tiny", epochs=1)
            wait_for_iteration(client, job["id"], PER_EPOCH + 40)
        stream_ended = threading.Event()
        threading.Thread(
            target=follow_events, args=(server, job["id"], stream_ended), daemon=True
        ).start()
        time.sleep(0.2)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # the server alone, as `docker stop` does
        try:
            code = server.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_DEADLINE_S} s after SIGTERM:\n{log.read_text()}")
        elapsed = time.monotonic() - started
        print(f"server exited {elapsed:.2f} s after SIGTERM with a job training")
        text = log.read_text()
        assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in text, text
        assert "timeout graceful shutdown exceeded" not in text and "Traceback" not in text
        assert stream_ended.wait(5)

        # Between the two servers: the job is back in the queue, checkpointed mid-epoch.
        jobs = open_job_store(Settings(data_dir=data_dir))
        try:
            stopped = jobs.get(job["id"])
            recorded, _ = jobs.costs(job["id"], 0)
        finally:
            jobs.close()
        assert stopped.status is JobStatus.queued and stopped.error is None
        assert stopped.iteration % PER_EPOCH != 0, "the stop landed on an epoch end"
        assert [i.iteration for i in recorded] == list(range(1, stopped.iteration + 1))
        _, meta = load_archive(
            DataLayout(data_dir).latest_checkpoint(job["id"]), CHECKPOINT_FORMAT, CHECKPOINT_VERSION
        )
        position = meta["position"]
        reached = (position["epoch"] - 1) * PER_EPOCH + position["next_batch"]
        assert reached == stopped.iteration, "not the stop iteration"
        assert meta["history"]["iterations"] == []  # the job store holds them

        server.start()
        with server.client() as client:
            resumed = wait_for_job(client, job["id"], timeout=60)
            assert resumed["status"] == "succeeded", resumed
            assert wait_for_job(client, queued["id"])["status"] == "succeeded"
            costs = client.get(f"/jobs/{job['id']}/costs").json()
            epochs = LENET["epochs"]
            assert [e["epoch"] for e in costs["epochs"]] == list(range(1, epochs + 1))
            assert [i["iteration"] for i in costs["iterations"]] == list(
                range(1, epochs * PER_EPOCH + 1)
            )

            again = wait_for_job(
                client, submit(client, "mnist-sample", "lenet5", **LENET)["id"], timeout=60
            )
            expected = model_params(client, again["model_id"], tmp_path)
            got = model_params(client, resumed["model_id"], tmp_path)
            for name in expected:
                np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
            straight = client.get(f"/jobs/{again['id']}/costs").json()
            assert [i["cost"] for i in straight["iterations"]] == [
                i["cost"] for i in costs["iterations"]
            ]
            assert [e["cost"] for e in straight["epochs"]] == [e["cost"] for e in costs["epochs"]]
    finally:
        server.kill_group()
