"""Training epochs (CPU time on 1 thread, wall time on 2) and batch predictions, tree by tree.

    .venv/bin/python -W ignore benchmarks/cpu_time.py [--trees DIR ...] [--networks lenet5 vgg32]
        [--rounds 5]

For the figures the README gives of a change ("the old and new trees in turn"): check the old
commit out beside this one (`git worktree add /tmp/old COMMIT`) and pass both trees. Every
measurement runs in a process of its own whose `cnn_core` comes from the tree (PYTHONPATH), on
the networks of `train_throughput.py`, rounds alternating between the trees:

- training: one epoch of `fit` on one thread, in images per second of the process's CPU time,
  so other programs on the cores count only through the caches; and one on two threads (a
  shard process each) in images per second of wall time, where what counts is how long each
  process waits for the other;
- prediction: `logits` of 256 images with the BLAS limit at 1 and at 2 threads, in images per
  second of the median wall time over 30 calls.

Printed: per network and tree, the median and range over rounds of each figure.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREDICT_IMAGES = 256


def measure(network):
    """The three figures of one network, with the cnn_core this process imports."""
    from threadpoolctl import threadpool_limits
    from train_throughput import BATCH, workload

    from cnn_core import Network

    config, X, y = workload(network)
    net = Network.from_config(config, seed=0)
    figures = {}
    with threadpool_limits(1):
        net.fit(X[: 2 * BATCH], y[: 2 * BATCH], epochs=1, batch_size=BATCH, threads=1)
        started = time.process_time()
        net.fit(X, y, epochs=1, batch_size=BATCH, threads=1)
        figures["train, 1 thread (CPU)"] = len(X) / (time.process_time() - started)
        net.fit(X[: 2 * BATCH], y[: 2 * BATCH], epochs=1, batch_size=BATCH, threads=2)
        started = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=BATCH, threads=2)
        figures["train, 2 threads (wall)"] = len(X) / (time.perf_counter() - started)
    images = X[:PREDICT_IMAGES]
    for threads in (1, 2):
        with threadpool_limits(threads):
            net.logits(images)
            seconds = []
            for _ in range(30):
                started = time.perf_counter()
                net.logits(images)
                seconds.append(time.perf_counter() - started)
        figures[f"predict {PREDICT_IMAGES}, {threads} threads"] = len(images) / statistics.median(
            seconds
        )
    return figures


def run(tree, network):
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", __file__, "--child", network],
        env=env, cwd=tree, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=Path, nargs="+", default=[HERE.parent])
    parser.add_argument("--networks", nargs="+", default=["lenet5", "vgg32"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    print(f"load average at start {os.getloadavg()[0]:.2f}; {args.rounds} rounds; median [range]")
    for network in args.networks:
        results = {tree: [] for tree in args.trees}
        for _ in range(args.rounds):
            for tree in args.trees:
                results[tree].append(run(tree, network))
        for tree, rounds in results.items():
            for name in rounds[0]:
                values = [r[name] for r in rounds]
                print(
                    f"{network:8} {str(tree):24} {name:22} {statistics.median(values):8.0f} "
                    f"[{min(values):.0f}-{max(values):.0f}] images/s"
                )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
