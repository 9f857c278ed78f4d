"""Many machines on one: two API servers and two `make worker` processes sharing one Redis, one
PostgreSQL and one data directory, all separate processes on loopback. Jobs submitted on one
server are followed, cancelled and downloaded on the other; workers are killed, stopped and
Redis is restarted while jobs train, and every job that was not cancelled ends with exactly
the weights of an uninterrupted run (a stopped worker's job resuming at the iteration it reached,
a killed one's at its last epoch end). Both servers report the same metrics of the deployment."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from app.storage.sql_jobs import SqlJobStore, database_url
from tests.support.builders import TINY_ARCHITECTURE
from tests.support.server import REPO, LiveServer, model_params
from tests.support.servers import PostgresServer, RedisServer, running

# mnist-sample (1,800 training digits) in batches of 16: 113 iterations an epoch, about 0.5 s
# an epoch on one BLAS thread; 30 epochs keep a job running for seconds after it is interrupted, so
# its resumption on the other worker is seen before it ends.
EPOCHS = 30
TRAINING = {"epochs": EPOCHS, "batch_size": 16, "validation_split": 0.1, "seed": 0,
            "optimizer": {"name": "adam", "learning_rate": 0.005}}  # fmt: skip
PER_EPOCH = 113


def worker_command() -> list[str]:
    """The command `make worker` runs, read from the Makefile, with this interpreter."""
    recipe = re.search(r"^worker:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    return [sys.executable if word == "$(PY)" else word for word in recipe.group(1).split()]


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                worker_command(), cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def name_suffix(self) -> str:
        return f"-{self.process.pid}"

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.process.pid).children(recursive=True)
        return []

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Cluster:
    def __init__(self, tmp: Path, redis_server: RedisServer, database_url_: str) -> None:
        self.redis = redis_server
        self.data_dir = tmp / "shared-volume"
        settings = {"CNN_DATABASE_URL": database_url_, "CNN_REDIS_URL": redis_server.url,
                    "CNN_TRAIN_THREADS": "1", "CNN_POLL_INTERVAL": "0.1"}  # fmt: skip
        env = {
            **os.environ,
            "CNN_DATA_DIR": str(self.data_dir),
            "PYTHONPATH": str(REPO),
            **settings,
        }
        self.env = env
        # The two servers run on one host here, so they share their counters as several server
        # processes of one host do (README "Scaling out"): each scrape adds up both.
        metrics_dir = tmp / "prometheus"
        metrics_dir.mkdir()
        shared = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **settings}
        self.apis = [LiveServer(self.data_dir, tmp / f"api{i}.log", **shared) for i in (1, 2)]
        self.database_url = database_url_
        self.jobs: SqlJobStore | None = None  # the database as the servers left it, once up
        self.workers = [WorkerProcess(env, tmp / f"worker{i}.log") for i in (1, 2)]
        self.tmp = tmp

    def client(self, i: int) -> httpx.Client:
        return httpx.Client(base_url=self.apis[i].url, timeout=30)

    def worker_of(self, job: dict, api: httpx.Client) -> "WorkerProcess | None":
        """The worker process training `job`, from the name /health gives."""
        live = api.get("/health").json()["jobs"]["live_workers"]
        names = [w["name"] for w in live if w["job_id"] == job["id"]]
        return next((w for w in self.workers if names and names[0].endswith(w.name_suffix)), None)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.tmp.glob("*.log"))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    with running(RedisServer()) as redis_server:
        cluster = Cluster(tmp_path_factory.mktemp("cluster"), redis_server,
                          postgres_server.new_database())  # fmt: skip
        try:
            for api in cluster.apis:
                api.start()
            for worker in cluster.workers:
                worker.start()
            with cluster.client(0) as api:
                wait_until(lambda: api.get("/health").json()["jobs"]["workers"] == 2, 30)
            url = database_url(cluster.database_url, cluster.data_dir)
            cluster.jobs = SqlJobStore(url, pooled=False)
            yield cluster
        finally:
            for worker in cluster.workers:
                worker.kill()
            for api in cluster.apis:
                api.kill_group()
            if cluster.jobs is not None:
                cluster.jobs.close()


def wait_until(condition, timeout: float, what: str = "condition"):
    """Poll `condition` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in {timeout} s"
        time.sleep(0.05)


def submit(api: httpx.Client) -> dict:
    body = {"dataset_id": "mnist-sample", "architecture": TINY_ARCHITECTURE, "training": TRAINING}
    response = api.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def running_at(api: httpx.Client, job_id: str, iteration: int) -> dict:
    """The job once it runs past `iteration`."""

    def reached() -> dict | None:
        job = api.get(f"/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        return job if job["progress"]["iteration"] >= iteration else None

    return wait_until(reached, 60, f"job {job_id} at iteration {iteration}")


def finished(api: httpx.Client, job_id: str, timeout: float = 90) -> dict:
    def ended() -> dict | None:
        job = api.get(f"/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(ended, timeout, f"job {job_id} finished")


def sse_events(api: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    """Every event of the job's stream until it ends."""
    events, name = [], None
    with api.stream("GET", f"/jobs/{job_id}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    return events


@pytest.fixture(scope="module")
def reference(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The weights of an uninterrupted run, submitted on one server and followed (SSE) and
    downloaded on the other."""
    with cluster.client(0) as api1, cluster.client(1) as api2:
        job = submit(api1)
        events = sse_events(api2, job["id"])
        assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded", events[-1]
        costs = [i["iteration"] for name, data in events if name == "costs"
                 for i in data["iterations"]]  # fmt: skip
        assert costs == list(range(1, EPOCHS * PER_EPOCH + 1))
        return model_params(api2, events[-1][1]["model_id"], tmp_path_factory.mktemp("ref"))


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_job_whose_worker_goes_away_resumes_on_the_other_to_the_same_weights(
    cluster: Cluster, reference: dict, tmp_path: Path, how: str
) -> None:
    with cluster.client(0) as api1, cluster.client(1) as api2:
        job = submit(api2)
        job = running_at(api1, job["id"], PER_EPOCH + 20)  # in epoch 2, past its checkpoint
        doomed = cluster.worker_of(job, api1)
        helpers = doomed.descendants()
        reached, first = job["progress"]["iteration"], cluster.jobs.get(job["id"]).attempt
        stopped_at, signalled = time.monotonic(), time.time()
        if how == "kill -9":
            os.kill(doomed.process.pid, signal.SIGKILL)  # the worker only: its horse must follow
        else:
            doomed.process.send_signal(signal.SIGTERM)
        try:
            try:  # a SIGTERM exits well within the compose stop grace (30 s)
                doomed.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{how}: the worker still runs\n{cluster.logs()}") from None
            print(f"{how}: the worker exited {time.monotonic() - stopped_at:.1f} s later")
            gone = psutil.wait_procs(helpers, timeout=10)[1]
            assert not gone, f"left running: {gone}"

            def moved() -> bool:
                now = api1.get(f"/jobs/{job['id']}").json()
                worker = cluster.worker_of(job, api1)
                return now["status"] == "running" and worker not in (None, doomed)

            try:
                wait_until(moved, 30, "the job running on the other worker")
            except AssertionError as lost:  # say where the job is and what the workers logged
                now = api1.get(f"/jobs/{job['id']}").json()
                raise AssertionError(f"{lost}; job now {now}\n{cluster.logs()}") from None
            print(f"{how}: running again {time.monotonic() - stopped_at:.1f} s later")

            # Where the new attempt's run began: SIGTERM checkpointed at the iteration it reached,
            # mid-epoch (a stop seen at an epoch end stops the next iteration); kill -9 left only
            # the checkpoints of epoch ends.
            def new_run():
                record = cluster.jobs.get(job["id"])
                begun = record.run_started_at or 0
                return record if record.attempt > first and begun > signalled else None

            start = wait_until(new_run, 30, "the new attempt's run").run_start_iteration
            if how == "SIGTERM":
                assert start >= reached and start % PER_EPOCH != 0, f"resumed at {start}"
            else:
                assert start >= PER_EPOCH and start % PER_EPOCH == 0, f"resumed at {start}"
            done = finished(api2, job["id"])
            assert done["status"] == "succeeded", cluster.logs()
            assert_same_weights(model_params(api1, done["model_id"], tmp_path), reference)
            iterations = api2.get(f"/jobs/{job['id']}/costs").json()["iterations"]
            assert [i["iteration"] for i in iterations] == list(range(1, EPOCHS * PER_EPOCH + 1))
        finally:  # back to two workers, also when this test fails: the next ones need two
            doomed.kill()
            doomed.start()
            wait_until(
                lambda: api1.get("/health").json()["jobs"]["workers"] == 2, 30, "two workers"
            )


def test_a_redis_restart_mid_run_loses_no_job(cluster: Cluster, reference: dict, tmp_path: Path):
    with cluster.client(0) as api1, cluster.client(1) as api2:
        jobs = [submit(api) for api in (api1, api2, api1)]  # two run, one waits for a worker
        running_at(api2, jobs[0]["id"], 10)
        cluster.redis.restart()  # empty: the queued job's call is gone
        for job in jobs:
            done = finished(api1, job["id"])
            assert done["status"] == "succeeded", cluster.logs()
            assert_same_weights(model_params(api2, done["model_id"], tmp_path), reference)


def test_a_cancel_on_one_server_stops_the_job_on_its_worker_and_publishes_nothing(
    cluster: Cluster,
) -> None:
    with cluster.client(0) as api1, cluster.client(1) as api2:
        job = submit(api1)
        job = running_at(api1, job["id"], 5)
        worker = wait_until(lambda: cluster.worker_of(job, api1), 5, "the job's worker")
        asked = time.monotonic()
        assert api2.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"

        wait_until(lambda: not worker.descendants(), 5, "the worker's horse gone")
        stopped = time.monotonic() - asked
        print(f"cancel: the horse ended {stopped:.2f} s after the request")
        assert stopped < 3
        progress = api1.get(f"/jobs/{job['id']}").json()["progress"]["iteration"]
        time.sleep(0.5)
        after = api1.get(f"/jobs/{job['id']}").json()
        assert after["status"] == "cancelled" and after["model_id"] is None
        assert after["progress"]["iteration"] == progress  # nothing written after the cancel
        assert all(m["job_id"] != job["id"] for m in api2.get("/models").json()["models"])
        health = api2.get("/health").json()["jobs"]
        assert health["executor"] == "rq" and health["workers"] == 2 and health["queued"] == 0


def test_a_queued_job_cancelled_on_the_other_server_never_runs(cluster: Cluster) -> None:
    with cluster.client(0) as api1, cluster.client(1) as api2:
        busy = [submit(api1) for _ in range(2)]
        for job in busy:
            running_at(api1, job["id"], 1)  # both workers taken
        waiting = submit(api1)
        assert api1.get(f"/jobs/{waiting['id']}").json()["status"] == "queued"
        assert api2.post(f"/jobs/{waiting['id']}/cancel").json()["status"] == "cancelled"
        for job in busy:
            assert api2.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        wait_until(lambda: api1.get("/health").json()["jobs"]["running"] == 0, 10, "idle")
        time.sleep(2)  # reconciles and free workers: nothing may take the cancelled job
        after = api1.get(f"/jobs/{waiting['id']}").json()
        assert after["status"] == "cancelled" and after["model_id"] is None
        assert after["progress"]["iteration"] == 0
        record = cluster.jobs.get(waiting["id"])
        assert record.attempt == 0 and record.started_at is None  # never claimed
        assert api2.get("/health").json()["jobs"]["queued"] == 0


def scrape(api: httpx.Client) -> dict[tuple[str, tuple], float]:
    text = api.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_both_servers_give_the_same_metrics_of_the_whole_deployment(cluster: Cluster) -> None:
    not_found = ("cnn_http_requests_total",
                 (("method", "GET"), ("route", "/jobs/{job_id}"), ("status", "404")))  # fmt: skip
    with cluster.client(0) as api1, cluster.client(1) as api2:
        before = scrape(api1).get(not_found, 0)
        for _ in range(3):
            assert api2.get("/jobs/no-such-job").status_code == 404
        assert scrape(api1)[not_found] == before + 3  # api2's requests, in api1's scrape

        job = submit(api1)
        running_at(api2, job["id"], 20)
        health = api1.get("/health").json()["jobs"]
        figures = [scrape(api) for api in (api1, api2)]
        for metrics in figures:
            assert metrics[("cnn_running_jobs", ())] == health["running"] == 1
            assert metrics[("cnn_live_workers", ())] == health["workers"] == 2
            assert metrics[("cnn_queue_length", ())] == health["queued"] == 0
            assert metrics[("cnn_training_images_per_second", ())] > 0
        assert api2.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        cancelled = [scrape(api)[("cnn_jobs", (("status", "cancelled"),))] for api in (api1, api2)]
        assert cancelled[0] == cancelled[1] >= 1
        assert scrape(api2)[("cnn_running_jobs", ())] == 0


def test_idle_workers_end_within_seconds_of_a_sigterm(tmp_path: Path) -> None:
    """RQ waits for its pubsub thread, which can sit out a 60 s poll: six workers, each must end
    in seconds (without `TrainingWorker.unsubscribe` two runs of this test in three failed)."""
    with running(RedisServer()) as redis_server:
        env = {**os.environ, "CNN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO),
               "CNN_REDIS_URL": redis_server.url}  # fmt: skip
        workers = [WorkerProcess(env, tmp_path / f"worker{i}.log") for i in range(6)]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                wait_until(lambda w=worker: "Listening on" in w.log.read_text(), 30, "a worker up")
            signalled = time.monotonic()
            for worker in workers:
                worker.process.send_signal(signal.SIGTERM)
            for worker in workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=max(0.0, signalled + 8 - time.monotonic()))
            running_still = [w.name_suffix for w in workers if w.process.poll() is None]
            assert not running_still, f"still running 8 s after SIGTERM: {running_still}"
        finally:
            for worker in workers:
                worker.kill()


def test_the_scale_out_compose_file_has_every_part_checked_and_no_secret() -> None:
    yaml = pytest.importorskip("yaml")
    text = (REPO / "docker-compose.scale.yml").read_text()
    services = yaml.safe_load(text)["services"]
    assert {"postgres", "redis", "api1", "api2", "worker1", "worker2"} <= services.keys()
    for name in ("api1", "api2"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"])
    for name in ("postgres", "redis", "worker1", "worker2"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("worker1", "worker2"):
        assert services[name]["command"][1:] == worker_command()[1:] and services[name]["init"]
        assert int(services[name]["stop_grace_period"].rstrip("s")) >= 10
        env = services[name]["environment"]
        assert env["CNN_REDIS_URL"] and env["CNN_DATABASE_URL"].startswith("postgresql://")
    assert "${POSTGRES_PASSWORD:?" in text and "${CNN_API_KEY:?" in text  # from the environment


def test_the_api_answers_503_while_postgresql_is_away(tmp_path: Path) -> None:
    postgres = PostgresServer()
    with running(postgres):
        settings = Settings(data_dir=tmp_path / "data", database_url=postgres.new_database())
        with TestClient(create_app(settings)) as client:
            assert client.get("/jobs").status_code == 200
            postgres.stop()
            response = client.get("/jobs")
            assert response.status_code == 503 and "job database" in response.json()["detail"]
            assert response.headers["Retry-After"]
            postgres.start_again()
            assert wait_until(lambda: client.get("/jobs").status_code == 200, 30, "back")
