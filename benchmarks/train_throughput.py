"""Training throughput and predict speed: cnn_core against PyTorch on the same networks.

    .venv/bin/python benchmarks/train_throughput.py [--networks lenet5 vgg32 vgg64 convnet]
        [--threads 1 2] [--rounds 5]

Networks (batch 64, Adam, float32):
- ``lenet5``: LeNet-5 on the 2,000 shipped mnist-sample digits (28x28x1, 10 classes);
- ``vgg32``: a CIFAR-sized VGG-style net, 3x32x32 -> two 3x3 convs of 32, max pool, two of 64,
  max pool, dense 256, 10 classes (about 25M multiply-adds per image);
- ``vgg64``: 3x64x64 -> two 3x3 convs each of 32, 64 and 128 filters, a max pool after each
  pair, dense 256, 10 classes (about 0.3G multiply-adds per image);
- ``convnet``: the ``convnet`` preset (two 3x3 convs of 32 and two of 64 filters, each with batch
  norm and relu, and dropout) on the shipped digits, as LeNet-5 (about 19M multiply-adds per
  image).
The VGG nets train on seeded random images: speed does not depend on the pixels.

Each framework runs in a process of its own with the same thread count and the same initial
weights; rounds alternate between them (cnn_core's time includes starting its helper
processes) because this machine's speed drifts from one minute to the next. Printed: the median
and range over rounds of each framework's images/s and of the per-round ratio; then prediction
of one image (median over many calls) and of a batch of 256 (per round the median of 9 calls
after one untimed, then the median over rounds).
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


def _vgg(input_shape, widths):
    conv = {"type": "conv", "kernel_size": 3, "padding": "same", "activation": "relu"}
    layers = []
    for width in widths:
        layers += [{**conv, "filters": width}, {**conv, "filters": width}]
        layers.append({"type": "maxpool", "pool_size": 2})
    layers += [
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
    return {"input_shape": list(input_shape), "layers": layers}


def workload(name):
    """(config, images X (N, C, H, W) float32, labels y int64) of a benchmark network."""
    if name in ("lenet5", "convnet"):
        data = load_mnist_sample()
        X, y = np.array(data.X, dtype=np.float32), data.y.astype(np.int64)
        return build_preset(name, (1, 28, 28), 10), X, y
    shape, widths, count = {
        "vgg32": ((3, 32, 32), (32, 64), 1024),
        "vgg64": ((3, 64, 64), (32, 64, 128), 256),
    }[name]
    rng = np.random.default_rng(0)
    X = rng.random((count, *shape), dtype=np.float32)
    return _vgg(shape, widths), X, rng.integers(0, 10, count)


def torch_model(net):
    """A PyTorch model of ``net``'s layers holding the same initial weights."""
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
    modules = []
    for i, plan in enumerate(net.plans):
        if plan.type == "conv":
            top, bottom, left, right = plan.padding
            if (top, left) != (bottom, right):
                modules.append(torch.nn.ZeroPad2d((left, right, top, bottom)))
                top = left = 0
            layer = torch.nn.Conv2d(
                plan.input_shape[0], plan.filters, plan.kernel_size, plan.stride, (top, left)
            )
        elif plan.type in ("maxpool", "avgpool"):
            pool = torch.nn.MaxPool2d if plan.type == "maxpool" else torch.nn.AvgPool2d
            modules.append(pool(plan.pool_size, plan.stride))
            continue
        elif plan.type == "flatten":
            modules.append(torch.nn.Flatten())
            continue
        elif plan.type == "dropout":
            modules.append(torch.nn.Dropout(plan.rate))
            continue
        elif plan.type == "batchnorm":
            norm = torch.nn.BatchNorm2d if len(plan.input_shape) == 3 else torch.nn.BatchNorm1d
            modules.append(norm(plan.input_shape[0], plan.epsilon, plan.momentum))
            if plan.activation in act:
                modules.append(act[plan.activation]())
            continue
        else:
            if len(plan.input_shape) == 3:
                modules.append(torch.nn.Flatten())
            layer = torch.nn.Linear(int(np.prod(plan.input_shape)), plan.units)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(net.params[f"{i}.W"]))
            layer.bias.copy_(torch.from_numpy(net.params[f"{i}.b"]))
        modules.append(layer)
        if plan.activation in act and i < len(net.plans) - 1:
            modules.append(act[plan.activation]())
    return torch.nn.Sequential(*modules)


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


def serve(framework, network, threads, epochs, conn):
    """One framework's side of the benchmark, in a process of its own so that neither
    framework's allocator or thread pools affect the other's; answers requests from bench()."""
    config, X, y = workload(network)
    net = Network.from_config(config, seed=0)
    one, batch = X[:1], np.resize(X, (256, *X.shape[1:]))
    with threadpool_limits(threads):
        if framework == "torch":
            torch.set_num_threads(threads)
            model = torch_model(net)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def train(r, X=X, y=y, epochs=epochs):
                model.train()
                for e in range(epochs):
                    torch_epoch(model, opt, X, y, r * epochs + e)

            def predict(images):
                model.eval()  # batch norm on running statistics, no dropout, as predict_proba
                with torch.inference_mode():
                    return model(torch.from_numpy(images)).softmax(1)
        else:

            def train(r, X=X, y=y, epochs=epochs):
                net.fit(X, y, epochs=epochs, batch_size=BATCH, seed=r)

            predict = net.predict_proba
        train(0, X[: 4 * BATCH], y[: 4 * BATCH], 1)  # warm-up
        while (request := conn.recv()) is not None:
            kind, r = request
            if kind == "predict":
                repeats = max(5, int(0.3 / max(timed(lambda: predict(one)), 1e-4)))
                predict(batch)  # the first big batch after training allocates afresh
                conn.send(
                    (
                        statistics.median(timed(lambda: predict(one)) for _ in range(repeats)),
                        statistics.median(timed(lambda: predict(batch)) for _ in range(9)),
                    )
                )
            else:
                conn.send(epochs * len(X) / timed(lambda r=r: train(r)))


def bench(network, threads, rounds, epochs):
    """Per framework: training images/s, 1-image seconds and 256-image seconds, one per round,
    rounds interleaved."""
    context = multiprocessing.get_context("spawn")
    sides = {}
    for framework in ("cnn_core", "torch") if torch is not None else ("cnn_core",):
        mine, theirs = context.Pipe()
        process = context.Process(target=serve, args=(framework, network, threads, epochs, theirs))
        process.start()
        theirs.close()  # so that a crashed side is an EOFError here, not a hang
        sides[framework] = (process, mine)
    results = {framework: {"train": [], "one": [], "batch": []} for framework in sides}
    for r in range(rounds):
        for framework, (_, conn) in sides.items():
            conn.send(("train", r))
            results[framework]["train"].append(conn.recv())
        for framework, (_, conn) in sides.items():
            conn.send(("predict", r))
            one, batch = conn.recv()
            results[framework]["one"].append(one)
            results[framework]["batch"].append(256 / batch)
    for process, conn in sides.values():
        conn.send(None)
        process.join()
    return results


def spread(values, fmt):
    """'median [min-max]' of ``values``."""
    low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} [{low}-{high}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["lenet5", "vgg32", "vgg64", "convnet"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per round and framework")
    args = parser.parse_args()
    print(
        f"batch {BATCH}, Adam, float32, {args.rounds} interleaved rounds of {args.epochs} "
        f"epoch(s); median [range]; torch {torch.__version__ if torch else 'not installed'}"
    )
    for network in args.networks:
        for threads in args.threads:
            res = bench(network, threads, args.rounds, args.epochs)
            ours = res["cnn_core"]
            head = f"{network:7} {threads} thread(s)"
            print(f"{head} train img/s: cnn_core {spread(ours['train'], '{:.0f}')}", end="")
            if "torch" in res:
                theirs = res["torch"]
                ratios = [a / b for a, b in zip(ours["train"], theirs["train"], strict=True)]
                print(
                    f"  torch {spread(theirs['train'], '{:.0f}')}"
                    f"  ratio {spread(ratios, '{:.2f}')}x"
                )
            else:
                print()
            one_ms = [t * 1e3 for t in ours["one"]]
            print(f"{head} predict 1 image ms: cnn_core {spread(one_ms, '{:.3f}')}", end="")
            if "torch" in res:
                t_ms = [t * 1e3 for t in theirs["one"]]
                ratios = [b / a for a, b in zip(one_ms, t_ms, strict=True)]
                print(f"  torch {spread(t_ms, '{:.3f}')}  ratio {spread(ratios, '{:.2f}')}x")
            else:
                print()
            print(f"{head} predict 256 img/s: cnn_core {spread(ours['batch'], '{:.0f}')}", end="")
            if "torch" in res:
                ratios = [a / b for a, b in zip(ours["batch"], theirs["batch"], strict=True)]
                print(
                    f"  torch {spread(theirs['batch'], '{:.0f}')}"
                    f"  ratio {spread(ratios, '{:.2f}')}x"
                )
            else:
                print()


if __name__ == "__main__":
    main()
