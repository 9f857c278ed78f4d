"""The package's entry points: load_dataset (the format from the bytes) and the shipped sample."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from cnn_core.datasets import (
    load_dataset,
    load_idx,
    load_mnist_sample,
    load_npz,
)
from tests.support.builders import npz_bytes, zip_bytes
from tests.support.datasets import assert_refused

# ---------------------------------------------------------------------------------------------
# load_dataset: format from the bytes


def test_load_dataset_ignores_misleading_file_names(tmp_path, rng, idx_pair, png):
    images, y, img_file, lbl_file = idx_pair
    npz_path = tmp_path / "train-images-idx3-ubyte.gz"
    npz_path.write_bytes(npz_bytes(X=images, y=y))
    zip_path = tmp_path / "data.npz"
    zip_path.write_bytes(zip_bytes({"a/0.png": png, "b/0.png": png}))
    lbl_path, img_path = tmp_path / "images.zip", tmp_path / "labels.npz"
    lbl_path.write_bytes(gzip.compress(lbl_file))
    img_path.write_bytes(img_file)

    assert load_dataset([npz_path]).preprocessing["source_format"] == "npz"
    assert load_dataset([zip_path]).preprocessing["source_format"] == "image_zip"
    ds = load_dataset([lbl_path, img_path])  # labels first: paired by dimensions
    assert ds.preprocessing["source_format"] == "idx"
    np.testing.assert_array_equal(ds.X, load_idx(img_file, lbl_file).X)
    assert load_dataset([io.BytesIO(img_file), lbl_file]).n_samples == 12


def test_load_dataset_takes_a_bare_source_and_refuses_empty_zips(tmp_path, rng):
    data = npz_bytes(X=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8), y=[0, 1, 2, 0])
    assert load_dataset(data).n_samples == 4
    assert load_dataset(io.BytesIO(data)).n_samples == 4
    assert_refused("zip file is empty", load_dataset, [zip_bytes({})])
    with pytest.raises(TypeError):
        load_dataset([12345])
    with pytest.raises(TypeError):
        load_npz(12345)


def test_load_dataset_refuses_what_it_cannot_pair(idx_pair, png):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("needs its partner", load_dataset, [img_file])
    assert_refused("both IDX files hold images", load_dataset, [img_file, img_file])
    assert_refused("got 3 files", load_dataset, [img_file, lbl_file, lbl_file])
    assert_refused(
        "upload it alone", load_dataset, [npz_bytes(X=np.zeros((2, 3, 3)), y=[0, 1]), lbl_file]
    )
    assert_refused("zip one folder per class", load_dataset, [png])
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))
    assert_refused("np.savez", load_dataset, [npy.getvalue()])
    assert_refused("expected an .npz", load_dataset, [b"hello world"])


# ---------------------------------------------------------------------------------------------
# The shipped sample


def test_mnist_sample_loads():
    ds = load_mnist_sample()
    assert ds.n_samples == 2000 and ds.input_shape == (1, 28, 28)
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.class_counts() == [200] * 10
    assert ds.X.dtype == np.float32 and ds.X.min() == 0.0 and ds.X.max() == 1.0
    assert ds.preprocessing["image_scale"] == 1 / 255
    assert ds.X[:, 0, 0, :].max() == 0.0  # MNIST: white digits on a black border


def test_mnist_sample_is_parsed_once_and_cannot_be_corrupted():
    first, second = load_mnist_sample(), load_mnist_sample()
    assert second.pixels is first.pixels and second.y is first.y  # shared, not re-read
    assert first.pixels.dtype == np.uint8
    for array in (first.pixels, first.y):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    first.class_names.append("x")
    first.preprocessing["image_scale"] = 1.0
    third = load_mnist_sample()
    assert third.class_names == [str(d) for d in range(10)]
    assert third.preprocessing["image_scale"] == 1 / 255


def test_mnist_holdout_is_disjoint_and_stratified(holdout):
    X, y = holdout
    assert X.shape == (500, 28, 28) and X.dtype == np.uint8
    assert np.bincount(y).tolist() == [50] * 10
    sample = np.rint(load_mnist_sample().X[:, 0] * 255).astype(np.uint8)
    seen = {x.tobytes() for x in sample}
    assert not any(x.tobytes() in seen for x in X)
