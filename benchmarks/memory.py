"""Memory of a big dataset's life against a real server: upload, one LeNet-5 epoch, a prediction.

    .venv/bin/python benchmarks/memory.py [--samples 60000] [--save DIR]

Builds an MNIST-sized dataset (60,000 28x28 digits: the 2,000 shipped digits, each shifted by
up to 3 pixels in 30 ways) as a gzipped MNIST IDX pair (`--save DIR` keeps the files), starts
`uvicorn app.main:app` on a temporary data dir, uploads the pair, trains LeNet-5 for one epoch
(batch 64, Adam, validation split 0.1, `CNN_TRAIN_THREADS` as the server resolves it) and
predicts one digit. It prints:

- the dataset's size on disk, against the float32 array it would be;
- the server's peak resident memory during the upload (its high-water mark reset just before,
  through /proc/<pid>/clear_refs, and read just after), above its resident memory before;
- the training worker's peak resident memory (the high-water mark of the job's process, which
  starts as a fork of the server's fork server), above the fork server's, and each shard
  helper's (forked by the worker: its pages are the worker's until either writes them).

Next to each peak it prints the bound the service keeps to: its process's memory before, plus
two float32 copies of the dataset (N x C x H x W x 4 bytes).
"""

import argparse
import gzip
import io
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from live_server import live_server
from PIL import Image

from cnn_core.datasets import load_mnist_sample

MB = 2**20
TRAINING = {
    "epochs": 1,
    "batch_size": 64,
    "validation_split": 0.1,
    "seed": 0,
    "optimizer": {"name": "adam", "learning_rate": 0.001},
}


def tiled_digits(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 28, 28) digits and their labels: the shipped digits, then the same digits
    shifted by (dy, dx), nearest shifts first, as many times as `n_samples` needs."""
    sample = load_mnist_sample()
    digits = np.rint(sample.X[:, 0] * 255).astype(np.uint8)
    shifts = sorted(
        ((dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)),
        key=lambda s: (abs(s[0]) + abs(s[1]), s),
    )
    copies = -(-n_samples // len(digits))
    if copies > len(shifts):
        raise SystemExit(f"at most {len(shifts) * len(digits):,} samples")
    X = np.concatenate([np.roll(digits, s, axis=(1, 2)) for s in shifts[:copies]])
    return X[:n_samples], np.tile(sample.y, copies)[:n_samples]


def idx_file(array: np.ndarray) -> bytes:
    """`array` (uint8) as a gzipped MNIST IDX file."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=6)


def status_kb(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Reset the process's resident high-water mark to its current resident memory."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class PeakWatcher:
    """Reads, every few milliseconds, the high-water mark of every process below the server,
    keeping the last one seen per process (they only grow), with its parent and command."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.peaks: dict[int, tuple[int, int, str]] = {}  # pid -> (peak kB, parent, command)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PeakWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(0.005):
            for child in self.server.children(recursive=True):
                try:
                    command = " ".join(child.cmdline())
                    peak = status_kb(child.pid, "VmHWM")
                    self.peaks[child.pid] = (peak, child.ppid(), command)
                except (psutil.Error, FileNotFoundError, ProcessLookupError, KeyError):
                    continue  # ended meanwhile

    def fork_server(self) -> int:
        return next(pid for pid, (_, _, cmd) in self.peaks.items() if "forkserver" in cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--save", type=Path, help="also write the IDX pair into this folder")
    args = parser.parse_args()

    X, y = tiled_digits(args.samples)
    images, labels = idx_file(X), idx_file(y)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "train-images-idx3-ubyte.gz").write_bytes(images)
        (args.save / "train-labels-idx1-ubyte.gz").write_bytes(labels)
    float_copy = X.size * 4
    bound = 2 * float_copy / MB
    print(
        f"dataset: {len(X):,} digits 1x28x28; upload {len(images) / MB:.1f} MB (gzipped IDX); "
        f"one float32 copy {float_copy / MB:.1f} MB"
    )

    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp) / "data") as (server, client):
        pid = server.process.pid
        before = status_kb(pid, "VmRSS") / 1024
        reset_peak(pid)
        started = time.perf_counter()
        files = [
            ("files", ("train-images-idx3-ubyte.gz", images)),
            ("files", ("train-labels-idx1-ubyte.gz", labels)),
        ]
        response = client.post("/datasets", files=files, timeout=600)
        response.raise_for_status()
        upload_s = time.perf_counter() - started
        peak = status_kb(pid, "VmHWM") / 1024
        dataset = response.json()
        stored = Path(tmp) / "data" / "datasets" / f"{dataset['id']}.npz"
        print(
            f"on disk: {stored.stat().st_size / MB:.1f} MB "
            f"({stored.stat().st_size / float_copy:.2f}x the float32 array)"
        )
        print(
            f"server during upload ({upload_s:.1f} s): peak RSS {peak:.0f} MB, "
            f"{peak - before:+.0f} MB over its {before:.0f} MB before; "
            f"bound {before:.0f} + 2 x {float_copy / MB:.0f} = {before + bound:.0f} MB"
        )

        with PeakWatcher(pid) as watcher:
            body = {"dataset_id": dataset["id"], "architecture": "lenet5", "training": TRAINING}
            job = client.post("/jobs", json=body).json()
            while (job := client.get(f"/jobs/{job['id']}").json())["status"] in (
                "queued",
                "running",
            ):
                time.sleep(0.1)
        if job["status"] != "succeeded":
            raise SystemExit(f"the job ended {job['status']}: {job['error']}")
        fork_server = watcher.fork_server()
        base = watcher.peaks[fork_server][0] / 1024
        workers = {p: v for p, v in watcher.peaks.items() if v[1] == fork_server}
        helpers = {p: v for p, v in watcher.peaks.items() if v[1] in workers}
        epoch = client.get(f"/jobs/{job['id']}/costs").json()["epochs"][0]
        print(
            f"training: 1 epoch of LeNet-5 in {epoch['seconds']:.1f} s, "
            f"val_accuracy {epoch['val_accuracy']:.4f}, {len(helpers) + 1} threads"
        )
        for peak_kb, _, _ in workers.values():
            print(
                f"worker: peak RSS {peak_kb / 1024:.0f} MB, {peak_kb / 1024 - base:+.0f} MB over "
                f"the fork server's {base:.0f} MB; bound {base:.0f} + 2 x "
                f"{float_copy / MB:.0f} = {base + bound:.0f} MB"
            )
        for peak_kb, _, _ in helpers.values():
            print(f"shard helper: peak RSS {peak_kb / 1024:.0f} MB (shares the worker's pages)")

        digit = io.BytesIO()
        Image.fromarray(X[7]).save(digit, format="PNG")
        predicted = client.post(
            f"/models/{job['model_id']}/predict",
            files={"files": ("digit.png", digit.getvalue())},
        ).json()["predictions"][0]
        print(
            f"predict one digit (label {y[7]}): {predicted['label']} "
            f"(probability {predicted['probability']:.3f})"
        )


if __name__ == "__main__":
    main()
