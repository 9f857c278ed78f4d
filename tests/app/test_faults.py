"""Training under faults: a job that needs too much memory, a worker killed with kill -9,
SIGTERM to the server mid-epoch, and the thread count a job trains (and resumes) with.

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
from app.storage.jobs import JobRecord, JobStatus, SqliteJobStore
from app.storage.layout import DataLayout
from app.training import worker
from cnn_core import Network
from cnn_core.files import load_archive
from cnn_core.network import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING
from tests.support.server import (
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


def test_fault_allocation_hook_is_inert_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    job = worker_job_named("oom")
    monkeypatch.delenv(worker.FAULT_ALLOCATE, raising=False)
    assert worker.fault_allocation(job) is None
    monkeypatch.setenv(worker.FAULT_ALLOCATE, "another-job:1")
    assert worker.fault_allocation(job) is None
    monkeypatch.setenv(worker.FAULT_ALLOCATE, "oom:1")
    assert worker.fault_allocation(job).nbytes == 2**20


def worker_job_named(name: str) -> JobRecord:
    return JobRecord(
        id="x",
        name=name,
        dataset_id="mnist-sample",
        architecture={},
        training={},
        status=JobStatus.running,
        created_at=0.0,
    )


def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings with no `CNN_*` variable set, whatever the environment running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("CNN_"):
            monkeypatch.delenv(name)
    return Settings(_env_file=None)


def test_worker_memory_limit_defaults_to_a_size_that_trains_lenet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every other worker test trains under this default; NumPy and OpenBLAS reserve far more
    # address space than they touch, so the limit must leave room for that.
    assert default_settings(monkeypatch).worker_memory_mb == 4096


def test_job_over_the_worker_memory_limit_fails_out_of_memory_and_the_server_carries_on(
    tmp_path: Path,
) -> None:
    env = {"CNN_WORKER_MEMORY_MB": "1024", "CNN_FAULT_WORKER_ALLOCATE": "greedy:2048"}
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
        assert not DataLayout(data_dir).checkpoint(doomed["id"]).exists()
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
        jobs = SqliteJobStore(DataLayout(data_dir).jobs_db)
        try:
            stopped = jobs.get(job["id"])
            recorded, _ = jobs.costs(job["id"], 0)
        finally:
            jobs.close()
        assert stopped.status is JobStatus.queued and stopped.error is None
        assert stopped.iteration % PER_EPOCH != 0, "the stop landed on an epoch end"
        assert [i.iteration for i in recorded] == list(range(1, stopped.iteration + 1))
        _, meta = load_archive(
            DataLayout(data_dir).checkpoint(job["id"]), CHECKPOINT_FORMAT, CHECKPOINT_VERSION
        )
        assert len(meta["history"]["iterations"]) == stopped.iteration, "not the stop iteration"

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


# --------------------------------------------------------------------------- thread count


def test_train_threads_default_to_at_most_two(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_settings(monkeypatch).train_threads == min(2, os.cpu_count() or 1)


def test_a_job_trains_and_resumes_with_the_thread_count_it_was_submitted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = DataLayout(tmp_path)
    layout.create()
    jobs = SqliteJobStore(layout.jobs_db)
    training = {**TINY_TRAINING, "early_stopping": None}
    jobs.create("j", None, "mnist-sample", TINY_ARCHITECTURE, training, threads=2)
    jobs.claim_next()
    assert jobs.get("j").threads == 2
    seen = []
    fit = Network.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(kwargs["threads"])
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Network, "fit", recording_fit)
    interrupt = threading.Event()
    interrupt.set()  # stop (and checkpoint) at the first iteration, then resume
    assert worker.run_job("j", layout.root, interrupt) is True
    assert jobs.get("j").status is JobStatus.running
    assert worker.run_job("j", layout.root) is False
    assert jobs.get("j").status is JobStatus.succeeded
    assert seen == [2, 2]
    jobs.close()
