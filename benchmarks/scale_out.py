"""Scale-out figures: one API server, RQ on a private Redis, a private PostgreSQL, and one or two
`make worker` processes (CNN_TRAIN_THREADS=1 each), all on loopback.

Per round, interleaved: 8 short jobs with one worker and then with two (submit to the last one
done), the submit-to-running latency of a job submitted to an idle worker, and the time from
kill -9 of the worker training a job to that job running again on the other. Medians with
their range over the rounds.

    .venv/bin/python benchmarks/scale_out.py --rounds 3
"""

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.live_server import LiveServer  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer  # noqa: E402

ARCHITECTURE = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "conv", "filters": 4, "kernel_size": 5, "stride": 2, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
}
TRAINING = {"epochs": 2, "batch_size": 16, "validation_split": 0.1, "seed": 0,
            "optimizer": {"name": "adam", "learning_rate": 0.005}}  # fmt: skip


def job(api: httpx.Client, epochs: int = 2) -> str:
    body = {"dataset_id": "mnist-sample", "architecture": ARCHITECTURE,
            "training": {**TRAINING, "epochs": epochs}}  # fmt: skip
    response = api.post("/jobs", json=body)
    response.raise_for_status()
    return response.json()["id"]


def wait(condition, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        time.sleep(0.01)
    return value


def status(api: httpx.Client, job_id: str) -> dict:
    return api.get(f"/jobs/{job_id}").json()


class Workers:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.processes = env, log, []

    def start(self, count: int, api: httpx.Client) -> None:
        while len(self.processes) < count:
            with open(self.log, "ab") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "app.training.rq_worker"], cwd=REPO, env=self.env,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
        wait(lambda: api.get("/health").json()["jobs"]["workers"] == count, 60)

    def stop(self, api: httpx.Client) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes = []
        wait(lambda: api.get("/health").json()["jobs"]["workers"] == 0, 60)

    def kill_the_one_training(self, api: httpx.Client, job_id: str) -> str:
        live = api.get("/health").json()["jobs"]["live_workers"]
        [name] = [w["name"] for w in live if w["job_id"] == job_id]
        [process] = [p for p in self.processes if name.endswith(f"-{p.pid}")]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.processes.remove(process)
        return name


def eight_jobs(api: httpx.Client) -> float:
    started = time.monotonic()
    ids = [job(api) for _ in range(8)]
    for job_id in ids:
        wait(lambda job_id=job_id: status(api, job_id)["status"] == "succeeded")
    return time.monotonic() - started


def submit_to_running(api: httpx.Client) -> float:
    started = time.monotonic()
    job_id = job(api)
    wait(lambda: status(api, job_id)["status"] != "queued")
    elapsed = time.monotonic() - started
    wait(lambda: status(api, job_id)["status"] == "succeeded")
    return elapsed


def death_to_running(api: httpx.Client, workers: Workers) -> float:
    job_id = job(api, epochs=30)
    wait(lambda: status(api, job_id)["progress"]["iteration"] > 20)
    dead = workers.kill_the_one_training(api, job_id)
    killed = time.monotonic()

    def running_again() -> bool:
        live = api.get("/health").json()["jobs"]["live_workers"]
        return any(w["job_id"] == job_id and w["name"] != dead for w in live)

    wait(running_again, 120)
    elapsed = time.monotonic() - killed
    api.post(f"/jobs/{job_id}/cancel")
    return elapsed


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    tmp = Path(tempfile.mkdtemp(prefix="cnn-scale-bench-"))
    redis_server, postgres = RedisServer(), PostgresServer()
    results: dict[str, list[float]] = {"one": [], "two": [], "latency": [], "death": []}
    try:
        redis_server.start()
        postgres.start()
        settings = {
            "CNN_DATABASE_URL": postgres.new_database(),
            "CNN_REDIS_URL": redis_server.url,
            "CNN_TRAIN_THREADS": "1",
            "CNN_POLL_INTERVAL": "0.05",
            "CNN_MAX_QUEUE": "32",
        }
        env = {**os.environ, "CNN_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(REPO),
               **settings}  # fmt: skip
        server = LiveServer(tmp / "data", tmp / "api.log", **settings)
        server.start()
        workers = Workers(env, tmp / "workers.log")
        with httpx.Client(base_url=server.url, timeout=30) as api:
            try:
                for r in range(rounds):
                    workers.start(1, api)
                    results["latency"].append(submit_to_running(api))
                    results["one"].append(eight_jobs(api))
                    workers.start(2, api)
                    results["two"].append(eight_jobs(api))
                    results["death"].append(death_to_running(api, workers))
                    workers.stop(api)
                    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s"
                                                         for k, v in results.items()))  # fmt: skip
            finally:
                workers.stop(api)
                server.kill_group()
    finally:
        redis_server.remove()
        postgres.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [one / two for one, two in zip(results["one"], results["two"], strict=True)]
    print(f"\n{rounds} rounds, medians (range):")
    print(f"8 jobs, one worker:            {summary(results['one'])}")
    print(f"8 jobs, two workers:           {summary(results['two'])}")
    print(f"speed-up:                      {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
    print(f"submit to running (idle):      {summary(results['latency'])}")
    print(f"worker killed to job running:  {summary(results['death'])}")


if __name__ == "__main__":
    main()
