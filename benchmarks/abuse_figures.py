"""Figures for the abuse classes of issue 8, medians with their range over several rounds.

    .venv/bin/python benchmarks/abuse_figures.py [--rounds 3]

1. Peak memory of a predict of N blank 4096x4096 RGBA PNGs (65 KB each), against a real server
   (`uvicorn app.main:app`, default settings): how far the server's peak RSS (VmHWM, reset
   before each request) rises above its resident size, for N = 1, 2 and 64, and for 4
   concurrent predicts of 2 images.
"""

import argparse
import io
import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image
from reliability_figures import start, wait


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
        server, url = start(Path(tmp))
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
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for line in predict_memory(args.rounds):
        print(line)


if __name__ == "__main__":
    main()
