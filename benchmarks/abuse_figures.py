"""Figures for the abuse classes of issue 8, medians with their range over several rounds.

    .venv/bin/python benchmarks/abuse_figures.py [--rounds 3]

1. Peak memory of a predict of N blank 4096x4096 RGBA PNGs (65 KB each), against a real server
   (`uvicorn app.main:app`, default settings): how far the server's peak RSS (VmHWM, reset
   before each request) rises above its resident size, for N = 1, 2 and 64, and for 4
   concurrent predicts of 2 images.
2. Cost queries on a 300,000-iteration history (in process, through the HTTP routes): the
   history written as a worker writes it (batches of 1,000), then `GET /costs` (the first
   page), `?max_points=100`, `costs.png` and a stream's first event; once with the retention
   policy (as served) and once with it switched off (all 300,000 rows stored), which shows
   what thinning in SQL costs on its own.
3. Checkpoint size after each epoch of 1,000 iterations (batch size 1), with the iterations
   kept in the checkpoint (as before) and without (as the service trains).
"""

import argparse
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from live_server import LiveServer
from PIL import Image
from service_latency import wait

import app.storage.sql_jobs
from app.main import create_app
from app.settings import Settings
from cnn_core import Network
from cnn_core.datasets import load_mnist_sample
from cnn_core.history import EpochSummary, IterationCost

HISTORY = 300_000


def blank_png(side: int = 4096) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def peak_growth_mb(pid: int, work: Callable[[], None]) -> float:
    """How far `pid`'s peak RSS rises above its current RSS while `work` runs."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak := current
    before = _hwm_mb(pid)
    work()
    return _hwm_mb(pid) - before


def summary(values: list[float], unit: str) -> str:
    return (
        f"median {statistics.median(values):.0f} {unit} "
        f"(range {min(values):.0f}-{max(values):.0f}, {len(values)} rounds)"
    )


def predict_memory(rounds: int) -> list[str]:
    png = blank_png()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveServer(Path(tmp))
        live.start()
        server, url = live.process, live.url
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                body = {
                    "dataset_id": "mnist-sample",
                    "architecture": "lenet5",
                    "training": {"epochs": 1},
                }
                job_id = client.post("/jobs", json=body).json()["id"]
                model_id = wait(client, job_id, {"succeeded"})["model_id"]
                url_predict = f"/models/{model_id}/predict"

                def predict(n: int, out: list[int]) -> None:
                    files = [("files", (f"{i}.png", png, "image/png")) for i in range(n)]
                    with httpx.Client(base_url=url, timeout=300) as own:
                        out.append(own.post(url_predict, files=files).status_code)

                cases: dict[str, Callable[[list[int]], None]] = {
                    f"1 predict of {n} image(s)": (lambda out, n=n: predict(n, out))
                    for n in (1, 2, 64)
                }

                def four_at_once(out: list[int]) -> None:
                    threads = [threading.Thread(target=predict, args=(2, out)) for _ in range(4)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()

                cases["4 concurrent predicts of 2 images"] = four_at_once
                for name, case in cases.items():
                    grown, seconds, statuses = [], [], []
                    for _ in range(rounds):
                        started = time.perf_counter()
                        grown.append(peak_growth_mb(server.pid, lambda c=case, s=statuses: c(s)))
                        seconds.append(time.perf_counter() - started)
                    lines.append(
                        f"{name} (4096x4096 RGBA, {len(png) >> 10} KB each): peak RSS "
                        f"+{summary(grown, 'MB')}, {statistics.median(seconds):.2f} s, "
                        f"status {sorted(set(statuses))}"
                    )
        finally:
            live.kill_group()
    return lines


def cost_queries(rounds: int, retention: bool) -> list[str]:
    if not retention:
        app.storage.sql_jobs.MAX_STORED_ITERATIONS = HISTORY + 1
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), allowed_hosts=["testserver"])
        with TestClient(create_app(settings)) as client:
            body = {"dataset_id": "mnist-sample", "architecture": "lenet5"}
            job_id = client.post("/jobs", json=body).json()["id"]
            client.post(f"/jobs/{job_id}/cancel")
            jobs = client.app.state.runner.jobs
            started = time.perf_counter()
            for first in range(1, HISTORY + 1, 1_000):
                rows = [IterationCost(i // 1000 + 1, i, 1 / i) for i in range(first, first + 1000)]
                jobs.record_iterations(job_id, rows)
            for epoch in range(1, 301):
                jobs.record_epoch(
                    job_id, EpochSummary(epoch, 0.1, 0.5, None, None, 1.0, epoch * 1000)
                )
            written = time.perf_counter() - started
            stored = len(jobs.costs(job_id, 0)[0])

            def first_event() -> int:
                with client.stream("GET", f"/jobs/{job_id}/events") as stream:
                    line = next(x for x in stream.iter_lines() if x.startswith("data: "))
                return len(line)

            queries = {
                "GET /costs": lambda: len(client.get(f"/jobs/{job_id}/costs").content),
                "GET /costs?max_points=100": lambda: len(
                    client.get(f"/jobs/{job_id}/costs?max_points=100").content
                ),
                "GET /costs.png": lambda: len(client.get(f"/jobs/{job_id}/costs.png").content),
                "first SSE event": first_event,
            }
            policy = "with retention" if retention else "retention off"
            lines.append(
                f"{HISTORY:,} iterations ({policy}): written in {written:.1f} s, "
                f"{stored:,} rows stored"
            )
            for name, query in queries.items():
                seconds, size = [], 0
                for _ in range(rounds):
                    began = time.perf_counter()
                    size = query()
                    seconds.append(1000 * (time.perf_counter() - began))
                lines.append(f"  {name}: {summary(seconds, 'ms')}, {size / 1024:.0f} KB")
    return lines


def checkpoint_sizes() -> list[str]:
    sample = load_mnist_sample()
    X, y = sample.X[:1000], sample.y[:1000]
    config = {
        "input_shape": [1, 28, 28],
        "layers": [
            {"type": "conv", "filters": 4, "kernel_size": 5, "stride": 2, "activation": "relu"},
            {"type": "maxpool", "pool_size": 2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    }
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for keep in (True, False):
            path = Path(tmp) / f"{keep}.npz"
            sizes: list[int] = []

            def on_epoch(event: dict, path: Path = path, sizes: list[int] = sizes) -> bool:
                if event["type"] == "epoch":
                    sizes.append(path.stat().st_size)
                return False

            Network.from_config(config).fit(
                X, y, epochs=3, batch_size=1, checkpoint_path=path, callback=on_epoch,
                keep_iterations=keep, threads=1,
            )  # fmt: skip
            per_iteration = (sizes[-1] - sizes[0]) / 2000
            shown = ", ".join(f"{b / 1024:.1f} KB" for b in sizes)
            extrapolated = (sizes[0] + per_iteration * (HISTORY - 1000)) / 2**20
            lines.append(
                f"checkpoint after epochs 1-3 of 1,000 iterations, iterations "
                f"{'kept' if keep else 'not kept'}: {shown} ({per_iteration:.0f} bytes per "
                f"iteration; at {HISTORY:,} iterations ~{extrapolated:.1f} MB)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for line in predict_memory(args.rounds):
        print(line)
    for line in cost_queries(args.rounds, retention=True) + cost_queries(args.rounds, False):
        print(line)
    for line in checkpoint_sizes():
        print(line)


if __name__ == "__main__":
    main()
