"""What synchronizing batch norm across training shards (as SyncBatchNorm does) would cost.

Sync batch norm needs every shard's per-channel sums before any shard can normalize, and again
in backward: two exchanges between the trainer and each helper process per batchnorm layer per
step, each one a barrier that leaves both processes waiting for the slower. This script times
one such exchange (a round trip of a small array over the pipe a ShardPool uses) and one
convnet training step on a 32-sample shard, in rounds, and prints the medians with their range,
and what the exchanges would add to a convnet step (3 batchnorm layers, 6 exchanges).

Usage: python benchmarks/batchnorm_shards.py [--rounds 5]
"""

import argparse
import os
import statistics
import sys
import time
from multiprocessing import Pipe
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnn_core import Network, build_preset  # noqa: E402
from cnn_core.noise import StepNoise  # noqa: E402

EXCHANGES = 1000


def round_trip_seconds():
    mine, theirs = Pipe()
    pid = os.fork()
    if pid == 0:
        try:
            mine.close()
            while (message := theirs.recv()) is not None:
                theirs.send(message)
        finally:
            os._exit(0)
    theirs.close()
    sums = np.zeros((2, 64))
    started = time.perf_counter()
    for _ in range(EXCHANGES):
        mine.send(sums)
        mine.recv()
    elapsed = (time.perf_counter() - started) / EXCHANGES
    mine.send(None)
    os.waitpid(pid, 0)
    return elapsed


def shard_step_seconds(net, X, y):
    started = time.perf_counter()
    net.shard_step(net.layers, X, y, 64, StepNoise(0, 1, 0, 32))
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    net = Network.from_config(build_preset("convnet", (1, 28, 28), 10))
    rng = np.random.default_rng(0)
    X, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    trips, steps = [], []
    for _ in range(args.rounds):  # interleaved, so a drift in the machine's speed hits both
        trips.append(round_trip_seconds())
        steps.append(shard_step_seconds(net, X, y))
    trip, step = statistics.median(trips), statistics.median(steps)
    print(
        f"pipe round trip: median {trip * 1e6:.0f} us (min {min(trips) * 1e6:.0f}, "
        f"max {max(trips) * 1e6:.0f})"
    )
    print(
        f"convnet step on a 32-sample shard: median {step * 1e3:.1f} ms "
        f"(min {min(steps) * 1e3:.1f}, max {max(steps) * 1e3:.1f})"
    )
    print(f"6 exchanges per step: {6 * trip / step:.1%} of a shard step, before barrier waits")


if __name__ == "__main__":
    main()
