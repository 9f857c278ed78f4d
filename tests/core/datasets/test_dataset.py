"""The Dataset type: frozen, checked arrays, pixels kept as the source had them, float32 inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cnn_core.datasets import (
    Dataset,
    load_idx,
    load_image_zip,
    load_npz,
)
from cnn_core.errors import DatasetError
from tests.support.builders import npz_bytes, png_bytes, zip_bytes
from tests.support.datasets import BYTE, labels


def test_dataset_is_frozen_and_checks_its_arrays():
    two = {"y": np.array([0, 1]), "class_names": ["a", "b"]}
    ds = Dataset(pixels=np.zeros((2, 1, 3, 3), np.float32), **two)
    assert repr(ds) == "Dataset(n_samples=2, input_shape=(1, 3, 3), n_classes=2)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.y = None
    with pytest.raises(DatasetError, match="uint8 or float32"):
        Dataset(pixels=np.zeros((2, 3, 3)), **two)
    with pytest.raises(DatasetError, match="uint8 or float32"):
        Dataset(pixels=np.zeros((2, 1, 3, 3)), **two)  # float64
    with pytest.raises(DatasetError, match="scale"):
        Dataset(pixels=np.zeros((2, 1, 3, 3), np.uint8), **two)
    with pytest.raises(DatasetError, match="int64 of shape"):
        Dataset(pixels=np.zeros((2, 1, 3, 3), np.float32), y=np.array([0]), class_names=["a", "b"])
    with pytest.raises(DatasetError, match="0..1"):
        Dataset(
            pixels=np.zeros((2, 1, 3, 3), np.float32), y=np.array([0, 2]), class_names=["a", "b"]
        )


def test_uint8_pixels_give_float_inputs_equal_by_batch_or_whole(rng):
    pixels = rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8)
    y, names = np.arange(6) % 2, ["a", "b"]
    ds = Dataset(pixels=pixels, y=y, class_names=names, preprocessing={"scale": 1 / 255})
    X = ds.X
    assert X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_array_equal(X, pixels.astype(np.float32) * BYTE)
    assert ds.X is not X  # converted at each access, never kept beside the pixels
    np.testing.assert_array_equal(ds.inputs(np.array([4, 1])), X[[4, 1]])
    np.testing.assert_array_equal(ds.inputs(slice(2, 5)), X[2:5])
    floats = Dataset(pixels=X, y=y, class_names=names, preprocessing={"scale": 1 / 255})
    assert floats.X is X  # float pixels are the input already, whatever the scale says


def test_8_bit_sources_stay_uint8_and_float_sources_float32(rng, idx_pair):
    images = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)
    y = labels(6, 2)
    for X in (images, images.astype(np.int16), images[..., None]):
        ds = load_npz(npz_bytes(X=X, y=y))
        assert ds.pixels.dtype == np.uint8 and ds.pixels.flags.c_contiguous
        np.testing.assert_array_equal(ds.pixels[:, 0], images)
    for X in (images.astype(np.float64), images.astype(np.float32) / 255):
        assert load_npz(npz_bytes(X=X, y=y)).pixels.dtype == np.float32
    assert load_idx(*idx_pair[2:]).pixels.dtype == np.uint8
    files = {f"{k}/{i}.png": png_bytes(images[i]) for i, k in enumerate("aabbab")}
    assert load_image_zip(zip_bytes(files)).pixels.dtype == np.uint8
