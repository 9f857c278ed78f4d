"""How the images look (framing.py): background, polarity and framing recorded by the readers,
and images of another aspect framed as prediction frames them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnn_core.datasets import (
    convert_images,
    load_image_zip,
    load_mnist_sample,
    load_npz,
)
from tests.support.builders import npz_bytes, png_bytes, zip_bytes
from tests.support.datasets import labels


def test_zip_images_of_another_aspect_are_framed_as_prediction_frames_them():
    def square_on_white(h, w):  # a 4x4 black square in the middle of white paper
        pixels = np.full((h, w), 255, np.uint8)
        pixels[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 0
        return pixels

    wide, tall = square_on_white(8, 32), square_on_white(40, 8)
    files = {f"{k}/{i}.png": png_bytes(square_on_white(8, 8)) for k in "ab" for i in range(3)}
    files |= {"a/wide.png": png_bytes(wide), "b/tall.png": png_bytes(tall)}
    ds = load_image_zip(zip_bytes(files))
    assert ds.input_shape == (1, 8, 8) and ds.preprocessing["polarity"] == "light"
    names = sorted(files, key=lambda n: (n.split("/")[0], n))
    for name, pixels in (("a/wide.png", wide), ("b/tall.png", tall)):
        x = ds.X[names.index(name)]
        predicted = convert_images(
            [Image.fromarray(pixels)], ds.input_shape, ds.preprocessing, invert="false"
        )[0]
        np.testing.assert_array_equal(x, predicted[0])  # the one conversion of both
        rows, cols = np.nonzero(x[0] < 0.5)
        assert np.ptp(rows) == np.ptp(cols)  # the square stays square: no stretching
        assert ds.X[names.index(name), 0, 0].min() == 1.0  # padded with the white paper
    np.testing.assert_array_equal(ds.pixels[0, 0], square_on_white(8, 8))  # kept as it was


def test_mnist_style_data_records_its_polarity_and_framing():
    prep = load_mnist_sample().preprocessing
    assert prep["background"] == [0.0] and prep["polarity"] == "dark"
    assert prep["framing"]["box"] == 20
    assert np.allclose(prep["framing"]["centre"], [14, 14], atol=0.5)


def test_light_background_is_recorded_and_unframed_data_records_no_framing(rng):
    X = np.full((20, 12, 12), 250, dtype=np.uint8)
    for i, image in enumerate(X):  # dark marks of many sizes and places
        side = 2 + i % 8
        image[i % 3 : i % 3 + side, : side + 1] = rng.integers(0, 100, (side, side + 1))
    prep = load_npz(npz_bytes(X=X, y=labels(20))).preprocessing
    assert prep["background"] == [250.0] and prep["polarity"] == "light"
    assert "framing" not in prep  # no box and centre that the images share
