"""Training throughput and predict latency: cnn_core against PyTorch on the same digits.

    .venv/bin/python benchmarks/train_throughput.py [--threads 1 2] [--rounds 5]

Trains LeNet-5 (28x28x1, 10 classes, batch 64, Adam, float32) on the shipped mnist-sample digits
in cnn_core and, when installed, in PyTorch with the same thread count and the same initial
weights, each in a process of its own. The two run interleaved, ``--epochs`` epochs each per
round (cnn_core's time includes starting its helper processes), because this machine's speed
drifts from one minute to the next; the ratio of the medians is the figure that matters. Then
each times predicting one image (median over many calls) and a batch of 256.
"""

import argparse
import multiprocessing
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
        torch.nn.Conv2d(1, 6, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(400, 120),
        torch.nn.ReLU(),
        torch.nn.Linear(120, 84),
        torch.nn.ReLU(),
        torch.nn.Linear(84, 10),
    )
    layers = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    indices = sorted({int(k.split(".")[0]) for k in net.params})
    with torch.no_grad():
        for layer, i in zip(layers, indices, strict=False):
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


def serve(framework, threads, epochs, conn):
    """One framework's side of the benchmark, in a process of its own so that neither
    framework's allocator or thread pools affect the other's; answers requests from main()."""
    data = load_mnist_sample()
    X, y = np.ascontiguousarray(data.X, dtype=np.float32), data.y.astype(np.int64)
    net = Network.from_config(build_preset("lenet5", (1, 28, 28), 10), seed=0)
    one, batch = X[:1], X[:256]
    with threadpool_limits(threads):
        if framework == "torch":
            torch.set_num_threads(threads)
            model = torch_lenet(net)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def train(r, X=X, y=y, epochs=epochs):
                for e in range(epochs):
                    torch_epoch(model, opt, X, y, r * epochs + e)

            def predict(images):
                with torch.inference_mode():
                    return model(torch.from_numpy(images)).softmax(1)
        else:

            def train(r, X=X, y=y, epochs=epochs):
                net.fit(X, y, epochs=epochs, batch_size=BATCH, seed=r)

            predict = net.predict_proba
        train(0, X[:512], y[:512], 1)  # warm-up
        while (request := conn.recv()) is not None:
            if request == "predict":
                conn.send(
                    (
                        statistics.median(timed(lambda: predict(one)) for _ in range(300)),
                        statistics.median(timed(lambda: predict(batch)) for _ in range(20)),
                    )
                )
            else:
                conn.send(epochs * len(X) / timed(lambda r=request: train(r)))


def bench(threads, rounds, epochs):
    """Median training images/s and predict times of each framework, rounds interleaved."""
    context = multiprocessing.get_context("spawn")
    sides = {}
    for framework in ("cnn_core", "torch") if torch is not None else ("cnn_core",):
        mine, theirs = context.Pipe()
        process = context.Process(target=serve, args=(framework, threads, epochs, theirs))
        process.start()
        sides[framework] = (process, mine)
    speeds = {framework: [] for framework in sides}
    for r in range(rounds):
        for framework, (_, conn) in sides.items():
            conn.send(r)
            speeds[framework].append(conn.recv())
    results = {}
    for framework, (process, conn) in sides.items():
        conn.send("predict")
        results[framework] = (statistics.median(speeds[framework]), *conn.recv())
        conn.send(None)
        process.join()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round and framework")
    args = parser.parse_args()
    print(
        f"LeNet-5, 2000 mnist-sample digits, batch {BATCH}, Adam, float32; torch: "
        f"{torch.__version__ if torch else 'not installed'}"
    )
    for threads in args.threads:
        results = bench(threads, args.rounds, args.epochs)
        speed, one, batch = results["cnn_core"]
        train = f"train   {threads} thread(s): cnn_core {speed:6.0f} img/s"
        pred = (
            f"predict {threads} thread(s): 1 image cnn_core {one * 1e3:.3f} ms; "
            f"256 images cnn_core {256 / batch:.0f} img/s"
        )
        if "torch" in results:
            t_speed, t_one, t_batch = results["torch"]
            train += f"   torch {t_speed:6.0f} img/s   ratio {speed / t_speed:.2f}x"
            pred = (
                f"predict {threads} thread(s): 1 image cnn_core {one * 1e3:.3f} ms, torch "
                f"{t_one * 1e3:.3f} ms ({t_one / one:.2f}x); 256 images cnn_core "
                f"{256 / batch:.0f} img/s, torch {256 / t_batch:.0f} img/s ({t_batch / batch:.2f}x)"
            )
        print(train)
        print(pred)


if __name__ == "__main__":
    main()
