"""Reliability figures against a real server on loopback: health under load, overload, faults.

    .venv/bin/python benchmarks/reliability_figures.py [--seconds 10]

Starts `uvicorn app.main:app` on a temporary data dir (as `make run` does) and measures:

1. `/health` latency (p50, p99, max) while a LeNet-5 job trains and 4 clients keep 8-image
   predictions in flight;
2. overload: 12 clients each posting 64 images at once against the default limit of 4
   predictions in flight: how many get 503 and how fast;
3. kill -9 of the training worker: how long until its job reads `failed`, and whether the next
   job still trains;
4. SIGTERM to the server while a job trains: how long until it exits, whether any worker
   outlives it, and whether the job resumes (not failed) after a restart on the same data dir.
"""

import argparse
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from live_server import LiveServer, live_server
from service_latency import png_bytes, wait

from cnn_core.datasets import load_mnist_sample


def workers(server_pid: int) -> list[psutil.Process]:
    """Live training workers: the children of the server's fork server."""
    found = []
    for forkserver in psutil.Process(server_pid).children():
        if "forkserver" in " ".join(forkserver.cmdline()):
            found += [p for p in forkserver.children() if p.status() != psutil.STATUS_ZOMBIE]
    return found


def job(client: httpx.Client, epochs: int) -> str:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": "mnist-sample",
            "architecture": "lenet5",
            "training": {"epochs": epochs, "batch_size": 64},
        },
    )
    response.raise_for_status()
    return response.json()["id"]


def wait_training(client: httpx.Client, job_id: str) -> None:
    while (client.get(f"/jobs/{job_id}").json()["progress"]["iteration"] or 0) < 5:
        time.sleep(0.05)


def stats(ms: list[float]) -> str:
    p50, p99 = np.percentile(ms, [50, 99])
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {max(ms):6.1f} ms  (n={len(ms)})"


def health_under_load(url: str, model_id: str, pngs: list[bytes], seconds: float) -> list[float]:
    files = [("files", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs[:8])]
    stop = threading.Event()

    def predict() -> None:
        with httpx.Client(base_url=url, timeout=60) as own:
            while not stop.is_set():
                own.post(f"/models/{model_id}/predict", files=files)

    clients = [threading.Thread(target=predict) for _ in range(4)]
    for thread in clients:
        thread.start()
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as probe:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            probe.get("/health").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    stop.set()
    for thread in clients:
        thread.join()
    return latencies


def overload(url: str, model_id: str, pngs: list[bytes]) -> tuple[list[float], int]:
    files = [("files", (f"{i}.png", pngs[i % len(pngs)], "image/png")) for i in range(64)]
    barrier, refused, served = threading.Barrier(12), [], []

    def predict() -> None:
        with httpx.Client(base_url=url, timeout=120) as own:
            barrier.wait()
            started = time.perf_counter()
            status = own.post(f"/models/{model_id}/predict", files=files).status_code
            (refused if status == 503 else served).append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=predict) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return refused, len(served)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    sample = load_mnist_sample()
    pngs = [png_bytes(np.rint(sample.X[i, 0] * 255).astype(np.uint8)) for i in range(16)]

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        server = LiveServer(data_dir)
        server.start()
        url = server.url
        try:
            with server.client() as client:
                model_id = wait(client, job(client, 1), {"succeeded"})["model_id"]
                long_job = job(client, 500)
                wait_training(client, long_job)
                health = health_under_load(url, model_id, pngs, args.seconds)
                refused, served = overload(url, model_id, pngs)

                [worker] = workers(server.process.pid)
                worker.kill()
                killed = time.perf_counter()
                failed = wait(client, long_job, {"failed"}, poll=0.01)
                detected = time.perf_counter() - killed
                next_job = wait(client, job(client, 1), {"succeeded", "failed"})["status"]

                resumable = job(client, 500)
                wait_training(client, resumable)
            children = psutil.Process(server.process.pid).children(recursive=True)
            server.process.send_signal(signal.SIGTERM)  # the server alone, as `docker stop` does
            signalled = time.perf_counter()
            server.process.wait(timeout=30)
            exit_seconds = time.perf_counter() - signalled
            time.sleep(0.5)
            leftover = [
                p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            ]
        finally:
            server.kill_group()

        with live_server(data_dir) as (_, client):
            after_restart = client.get(f"/jobs/{resumable}").json()["status"]

    print(f"/health while a job trains and 4 clients predict: {stats(health)}")
    print(
        f"overload, 12 clients x 64 images, limit 4 in flight: {len(refused)} refused with 503 "
        f"({stats(refused) if refused else 'none'}), {served} served"
    )
    print(
        f"worker killed with kill -9: job failed after {detected * 1000:.0f} ms "
        f"({failed['error']!r}); next job: {next_job}"
    )
    print(
        f"SIGTERM with a job training: server exited after {exit_seconds:.2f} s, "
        f"{len(leftover)} process(es) left; after restart the job is {after_restart}"
    )


if __name__ == "__main__":
    main()
