"""Service speed against a real server on loopback: predict latency and training overhead.

    .venv/bin/python benchmarks/service_latency.py [--requests 500] [--latency-rounds 5]
                                                    [--rounds 2]

Starts `uvicorn app.main:app` on a temporary data dir and a free port, then measures:

1. Predict latency of one 28x28 PNG digit (LeNet-5 model) against `GET /health` on the same
   server and client: sequential requests over one keep-alive connection, a predict and a
   /health in turn, so both see the same machine. Each round measures with no job running,
   then again while a LeNet-5 job trains in the worker process (started for the round and
   cancelled after it), for `--latency-rounds` rounds; per round p50 and p99 of each and the
   ratio of the p50s, printed as the median over the rounds with the range.
2. Service overhead: a 5-epoch LeNet-5 job (batch 64, Adam, no validation split) on 8,000 digits
   (the built-in 2,000 and three copies shifted by a pixel), from its `created_at` to its
   `finished_at` (queueing, worker start, data loading, training with progress recording and
   checkpoints, publishing the model), against cnn_core's own `fit` on the same data in this
   process with the same thread count (`CNN_TRAIN_THREADS`, as the server resolves it: the
   weights, and the speed, depend on it). The two alternate for `--rounds` rounds because this
   machine's speed drifts; medians are compared, end to end and epochs alone, and so are the
   fastest rounds (on a shared machine, the round least disturbed by other processes).
"""

import argparse
import io
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from live_server import live_server
from PIL import Image

from app.settings import Settings
from cnn_core import Network, build_preset
from cnn_core.datasets import load_mnist_sample

TRAINING = {
    "epochs": 5,
    "batch_size": 64,
    "validation_split": 0.0,
    "seed": 0,
    "optimizer": {"name": "adam", "learning_rate": 0.001},
}


def eight_thousand_digits() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (8000, 28, 28) digits and labels: the sample plus three shifted copies."""
    sample = load_mnist_sample()
    X = np.rint(sample.X[:, 0] * 255).astype(np.uint8)
    shifted = [np.roll(X, shift, axis=axis) for axis, shift in ((1, 1), (2, 1), (2, -1))]
    return np.concatenate([X, *shifted]), np.tile(sample.y, 4)


def npz_bytes(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def submit(client: httpx.Client, dataset_id: str, training: dict) -> str:
    response = client.post(
        "/jobs", json={"dataset_id": dataset_id, "architecture": "lenet5", "training": training}
    )
    response.raise_for_status()
    return response.json()["id"]


def wait(client: httpx.Client, job_id: str, until: set[str], poll: float = 0.05) -> dict:
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in until:
        time.sleep(poll)
    return job


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def multipart(png: bytes) -> tuple[bytes, str]:
    """The body and content type of a form with one part `files` holding `png`, encoded once
    so the figures measure the server rather than the client's multipart encoder."""
    boundary = "cnnservicebenchmark"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="digit.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    return (
        body + png + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def paired_latencies(
    client: httpx.Client, model_id: str, png: bytes, n: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of `n` predictions of one image and of `n` `GET /health`, one of each in
    turn (after 20 warm-up pairs)."""
    url = f"/models/{model_id}/predict"
    body, content_type = multipart(png)
    predict, health = [], []
    for i in range(n + 20):
        started = time.perf_counter()
        response = client.post(url, content=body, headers={"content-type": content_type})
        predicted = time.perf_counter()
        response.raise_for_status()
        checked = time.perf_counter()
        client.get("/health").raise_for_status()
        ended = time.perf_counter()
        if i >= 20:
            predict.append((predicted - started) * 1000)
            health.append((ended - checked) * 1000)
    return predict, health


ROUND_FIGURES = ("predict p50", "predict p99", "health p50", "health p99", "p50 ratio")


def round_figures(predict: list[float], health: list[float]) -> dict[str, float]:
    """One round's percentiles (ms) and the ratio of the predict p50 to the /health p50."""
    p50, p99 = np.percentile(predict, [50, 99])
    h50, h99 = np.percentile(health, [50, 99])
    values = (p50, p99, h50, h99, p50 / h50)
    return dict(zip(ROUND_FIGURES, (float(v) for v in values), strict=True))


def summary(rounds: list[dict[str, float]]) -> str:
    """Each figure's median over the rounds, with its range."""
    parts = []
    for name in ROUND_FIGURES:
        values = [r[name] for r in rounds]
        unit = "x" if name == "p50 ratio" else " ms"
        parts.append(
            f"{name} {statistics.median(values):.2f}{unit} [{min(values):.2f}-{max(values):.2f}]"
        )
    return ", ".join(parts)


def in_process_fit(X: np.ndarray, y: np.ndarray, threads: int) -> tuple[float, float]:
    """Seconds of cnn_core's own fit, with the data already in memory, and of its epochs."""
    net = Network.from_config(build_preset("lenet5", (1, 28, 28), 10), seed=0)
    started = time.perf_counter()
    history = net.fit(
        X,
        y,
        epochs=TRAINING["epochs"],
        batch_size=TRAINING["batch_size"],
        optimizer=TRAINING["optimizer"],
        seed=TRAINING["seed"],
        threads=threads,
    )
    return time.perf_counter() - started, sum(epoch.seconds for epoch in history.epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    X8, y8 = eight_thousand_digits()
    X_fit = X8[:, None].astype(np.float32) * np.float32(1 / 255)
    png = png_bytes(X8[7])
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp)) as (_, client):
        dataset = client.post("/datasets", files={"files": ("digits.npz", npz_bytes(X8, y8))})
        dataset_id = dataset.json()["id"]
        quick = wait(
            client,
            submit(client, "mnist-sample", {**TRAINING, "epochs": 1}),
            {"succeeded", "failed"},
        )
        model_id = quick["model_id"]

        idle, busy, job_ended = [], [], False
        for _ in range(args.latency_rounds):
            idle.append(round_figures(*paired_latencies(client, model_id, png, args.requests)))
            busy_job = submit(client, dataset_id, {**TRAINING, "epochs": 50})
            wait(client, busy_job, {"running"})
            time.sleep(1)  # let the worker get past its start-up and into training
            busy.append(round_figures(*paired_latencies(client, model_id, png, args.requests)))
            job_ended |= client.get(f"/jobs/{busy_job}").json()["status"] != "running"
            client.post(f"/jobs/{busy_job}/cancel")
            wait(client, busy_job, {"cancelled", "succeeded"})

        threads = Settings().train_threads  # what the server, started with this environment, uses
        service, local, worker, local_epochs = [], [], [], []
        for _ in range(args.rounds):
            total, epochs = in_process_fit(X_fit, y8, threads)
            local.append(total)
            local_epochs.append(epochs)
            job = wait(
                client, submit(client, dataset_id, TRAINING), {"succeeded", "failed"}, poll=0.5
            )  # slow polling: the client must not compete for the CPU
            service.append(seconds_between(job["created_at"], job["finished_at"]))
            costs = client.get(f"/jobs/{job['id']}/costs").json()
            worker.append(sum(epoch["seconds"] for epoch in costs["epochs"]))

    print(
        f"predict one 28x28 PNG and GET /health, in turn, {args.requests} of each per round, "
        f"{args.latency_rounds} rounds (median [range]):"
    )
    print(f"  no job running: {summary(idle)}")
    print(
        f"  job training:   {summary(busy)}"
        f"{'   (warning: a job ended during its round)' if job_ended else ''}"
    )
    s, f, w, fe = (statistics.median(v) for v in (service, local, worker, local_epochs))
    print(
        f"5-epoch LeNet-5 on 8,000 digits, {threads} training thread(s): service {s:.2f} s, "
        f"in-process fit {f:.2f} s -> service overhead {100 * (s - f) / f:+.1f}%"
    )
    print(
        f"  epochs alone: inside the worker {w:.2f} s, in-process {fe:.2f} s "
        f"({100 * (w - fe) / fe:+.1f}%)"
    )
    s, f = min(service), min(local)
    print(
        f"  fastest rounds: service {s:.2f} s, in-process fit {f:.2f} s -> "
        f"{100 * (s - f) / f:+.1f}%"
    )
    print(
        f"  rounds: service {[round(v, 2) for v in service]}, "
        f"in-process {[round(v, 2) for v in local]}"
    )


if __name__ == "__main__":
    main()
