"""Training throughput and predict latency: cnn_core against PyTorch on the same digits.

    .venv/bin/python benchmarks/train_throughput.py [--threads 1 2] [--rounds 5]

Trains LeNet-5 (28x28x1, 10 classes, batch 64, Adam, float32) on the shipped mnist-sample digits
in cnn_core and, when installed, in PyTorch with the same thread count and the same initial
weights. The two run interleaved, ``--epochs`` epochs each per round (cnn_core's time includes
starting its helper processes), because this machine's speed drifts from one minute to the
next; the ratio of the medians is the figure that matters. Then it times predicting one image
(median over many calls) and a batch of 256.
"""

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from cnn_core import Network, build_preset
from cnn_core.datasets import load_mnist_sample

try:
    import torch
except ImportError:  # the comparison is optional
    torch = None

BATCH = 64


def torch_lenet(net):
    """A PyTorch LeNet-5 holding the same initial weights as ``net``."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10),
    )
    layers = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    indices = sorted({int(k.split(".")[0]) for k in net.params})
    with torch.no_grad():
        for layer, i in zip(layers, indices):
            layer.weight.copy_(torch.from_numpy(net.params[f"{i}.W"]))
            layer.bias.copy_(torch.from_numpy(net.params[f"{i}.b"]))
    return model


def torch_epoch(model, opt, X, y, seed):
    order = np.random.default_rng(seed).permutation(len(X))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    for b in range(0, len(X), BATCH):
        idx = torch.from_numpy(order[b : b + BATCH])
        opt.zero_grad()
        loss = loss_fn(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_training(X, y, threads, rounds, epochs):
    net = Network.from_config(build_preset("lenet5", (1, 28, 28), 10), seed=0)
    ours, theirs = [], []
    with threadpool_limits(threads):
        if torch is not None:
            torch.set_num_threads(threads)
            model = torch_lenet(net)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            torch_epoch(model, opt, X[:512], y[:512], 0)  # warm-up
        net.fit(X[:512], y[:512], epochs=1, batch_size=BATCH)  # warm-up
        images = epochs * len(X)
        for r in range(rounds):
            ours.append(images / timed(lambda r=r: net.fit(X, y, epochs=epochs, batch_size=BATCH, seed=r)))
            if torch is not None:
                theirs.append(images / timed(lambda r=r: [torch_epoch(model, opt, X, y, r * epochs + e)
                                                          for e in range(epochs)]))
    return statistics.median(ours), (statistics.median(theirs) if theirs else None)


def bench_predict(X, threads, repeats=300):
    net = Network.from_config(build_preset("lenet5", (1, 28, 28), 10), seed=0)
    one, batch = X[:1], X[:256]
    with threadpool_limits(threads):
        ours_one = statistics.median(timed(lambda: net.predict_proba(one)) for _ in range(repeats))
        ours_batch = statistics.median(timed(lambda: net.predict_proba(batch)) for _ in range(20))
        theirs_one = theirs_batch = None
        if torch is not None:
            torch.set_num_threads(threads)
            model = torch_lenet(net).eval()
            t_one, t_batch = torch.from_numpy(one), torch.from_numpy(batch)
            with torch.inference_mode():
                theirs_one = statistics.median(timed(lambda: model(t_one).softmax(1)) for _ in range(repeats))
                theirs_batch = statistics.median(timed(lambda: model(t_batch).softmax(1)) for _ in range(20))
    return ours_one, theirs_one, ours_batch, theirs_batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round and framework")
    args = parser.parse_args()
    data = load_mnist_sample()
    X, y = np.ascontiguousarray(data.X, dtype=np.float32), data.y.astype(np.int64)
    print(f"LeNet-5, {len(X)} mnist-sample digits, batch {BATCH}, Adam, float32; torch: "
          f"{torch.__version__ if torch else 'not installed'}")
    for threads in args.threads:
        ours, theirs = bench_training(X, y, threads, args.rounds, args.epochs)
        line = f"train  {threads} thread(s): cnn_core {ours:8.0f} img/s"
        if theirs:
            line += f"   torch {theirs:8.0f} img/s   ratio {ours / theirs:.2f}x"
        print(line)
    for threads in args.threads:
        o1, t1, ob, tb = bench_predict(X, threads)
        line = f"predict {threads} thread(s): 1 image cnn_core {o1 * 1e3:.3f} ms"
        if t1:
            line += f" torch {t1 * 1e3:.3f} ms ({t1 / o1:.2f}x)"
        line += f"; 256 images cnn_core {256 / ob:.0f} img/s"
        if tb:
            line += f" torch {256 / tb:.0f} img/s ({tb / ob:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
