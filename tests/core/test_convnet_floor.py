"""A floor under the convnet recipe on a small budget: the shipped digits, 1,000 to train on
for 2 epochs, the 500 held-out test digits to score. The full figure (about 6,500 digits, 15
epochs) comes from benchmarks/convnet_accuracy.py and is in the README; this guards against a
change that breaks learning with batch norm, dropout, augmentation and the schedule on."""

from pathlib import Path

import numpy as np

from cnn_core import Network, build_preset
from cnn_core.datasets import load_mnist_sample

HOLDOUT = Path(__file__).resolve().parent.parent / "data" / "mnist_holdout.npz"
FLOOR = 0.88  # measured 0.938 (seed 0) at this budget


def test_convnet_recipe_learns_real_digits_on_a_small_budget():
    sample = load_mnist_sample()
    holdout = np.load(HOLDOUT)
    net = Network.from_config(build_preset("convnet", (1, 28, 28), 10), seed=0)
    history = net.fit(
        sample.X[:1000],
        sample.y[:1000],
        epochs=2,
        batch_size=32,
        optimizer={"name": "adamw", "learning_rate": 3e-3},
        lr_schedule={"name": "cosine"},
        augmentation={"shift": 2, "rotate": 10},
        threads=1,
    )
    X_test = (holdout["X"][:, None] * sample.preprocessing["scale"]).astype(np.float32)
    accuracy = float(np.mean(net.predict(X_test) == holdout["y"]))
    assert history.epochs[-1].learning_rate < history.epochs[0].learning_rate
    assert accuracy >= FLOOR, f"convnet reached {accuracy:.3f} on the held-out digits"
