"""open_image and images_to_array: the decoding and conversion that readers and prediction share,
and the pixel cap checked before decoding."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from cnn_core.datasets import (
    images_to_array,
    load_image_zip,
    load_mnist_sample,
    open_image,
)
from cnn_core.errors import ConfigError
from tests.support.builders import png_bytes, png_declaring, zip_bytes
from tests.support.datasets import BYTE, assert_refused

# ---------------------------------------------------------------------------------------------
# The pixel cap, before decoding


def test_decompression_bomb_png_is_refused_quickly(png):
    bomb = png_declaring(20_000, 10_000)
    assert len(bomb) < 200
    start = time.perf_counter()
    assert_refused(
        "too many pixels",
        load_image_zip,
        zip_bytes({"a/0.png": png, "b/0.png": png, "b/bomb.png": bomb}),
    )
    assert_refused("too many pixels", open_image, bomb)
    assert time.perf_counter() - start < 1.0


def test_png_over_the_pixel_cap_is_refused_before_decoding(png):
    big = png_declaring(5_000, 5_000)  # under Pillow's own limit, over ours
    start = time.perf_counter()
    assert_refused(
        "5000x5000 = 25,000,000 pixels, over the limit",
        load_image_zip,
        zip_bytes({"a/0.png": png, "b/0.png": png, "b/big.png": big}),
    )
    assert_refused("over the limit of 100", open_image, png_declaring(20, 20), max_pixels=100)
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------
# images_to_array and open_image


def test_png_of_a_sample_digit_reads_back_exactly():
    ds = load_mnist_sample()
    digit = np.rint(ds.X[7, 0] * 255).astype(np.uint8)
    img = open_image(png_bytes(digit))
    np.testing.assert_array_equal(
        images_to_array([img], ds.input_shape, ds.preprocessing), ds.X[7:8]
    )


def test_images_to_array_converts_modes(rng):
    prep = {"image_scale": 1 / 255}
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)

    out = images_to_array([Image.fromarray(gray), Image.fromarray(rgb)], (1, 6, 5), prep)
    assert out.shape == (2, 1, 6, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], gray.astype(np.float32) * BYTE)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(out[1, 0], luma.astype(np.float32) * BYTE)

    out = images_to_array([Image.fromarray(gray)], (3, 6, 5), prep)
    assert out.shape == (1, 3, 6, 5) and (out[0] == out[0, :1]).all()

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 255, 0, 128
    out = images_to_array([Image.fromarray(rgba, "RGBA")], (1, 2, 2), prep)
    np.testing.assert_allclose(out[0, 0], [[1.0, 0.0], [128 / 255, 128 / 255]], atol=1 / 255)

    pal = Image.fromarray(gray).quantize(8)
    assert pal.mode == "P"
    out = images_to_array([pal], (1, 6, 5), prep)
    np.testing.assert_array_equal(out[0, 0], np.asarray(pal.convert("L")) * BYTE)

    la = Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA")
    np.testing.assert_array_equal(
        images_to_array([la], (1, 6, 5), prep)[0, 0], gray.astype(np.float32) * BYTE
    )


def test_images_to_array_reads_16_bit_png():
    wide = np.array([[0, 65535], [257 * 100, 257 * 200]], np.uint16)
    img = open_image(png_bytes(wide))
    assert img.mode.startswith("I")
    out = images_to_array([img], (1, 2, 2), {"image_scale": 1.0})
    np.testing.assert_array_equal(out[0, 0], [[0, 255], [100, 200]])


def test_images_to_array_resizes_and_scales(rng):
    img = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    out = images_to_array([img, img], (3, 28, 28), {"image_scale": 1.0})
    assert out.shape == (2, 3, 28, 28) and out.max() > 1.0
    assert images_to_array([], (1, 28, 28), {"image_scale": 1.0}).shape == (0, 1, 28, 28)


def test_images_to_array_handles_cmyk_float_and_exif_rotation(rng):
    prep = {"image_scale": 1.0}
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    np.testing.assert_array_equal(
        images_to_array([cmyk], (3, 4, 6), prep)[0],
        np.asarray(cmyk.convert("RGB")).transpose(2, 0, 1),
    )
    floats = Image.fromarray(np.array([[-5.0, 12.4], [254.6, 300.0]], np.float32))
    assert floats.mode == "F"
    np.testing.assert_array_equal(
        images_to_array([floats], (1, 2, 2), prep)[0, 0], [[0, 12], [255, 255]]
    )

    tall = np.zeros((6, 4), np.uint8)
    tall[0, :] = 255  # top row lit
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after turning 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(tall).save(buf, format="PNG", exif=exif)
    out = images_to_array([open_image(buf.getvalue())], (1, 4, 6), prep)[0, 0]
    np.testing.assert_array_equal(out[:, -1], [255] * 4)  # the lit row is now the right column


def test_images_to_array_and_open_image_refuse_truncated_images(rng):
    data = png_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))[:-200]
    assert_refused("truncated or corrupt", open_image, data)
    lazy = Image.open(io.BytesIO(data))
    assert_refused(
        "image 0 could not be decoded", images_to_array, [lazy], (1, 64, 64), {"image_scale": 1.0}
    )


def test_images_to_array_refuses_bad_arguments():
    img = Image.new("L", (4, 4))
    assert_refused("2 channels", images_to_array, [img], (2, 4, 4), {"image_scale": 1.0})
    with pytest.raises(ConfigError, match=r"input_shape must be \[channels, height, width\]"):
        images_to_array([img], (4, 4), {"image_scale": 1.0})
    assert_refused("image_scale", images_to_array, [img], (1, 4, 4), {})


def test_open_image_refuses_other_formats_and_garbage():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    assert_refused("not a PNG or JPEG", open_image, buf.getvalue())
    assert_refused("not a PNG or JPEG", open_image, b"\x89PNG garbage")


def test_open_image_starts_its_messages_with_a_given_name(rng):
    png = png_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    for data, kwargs in [
        (b"GIF89a", {}),
        (png[:60], {}),
        (png[:-200], {}),
        (png, {"max_pixels": 100}),
        (png_declaring(20_000, 10_000), {}),
    ]:
        error = assert_refused(
            "^digit.png: the image ", open_image, data, name="digit.png", **kwargs
        )
        unnamed = assert_refused("^the image ", open_image, data, **kwargs)
        assert type(error) is type(unnamed)
        assert str(error) == f"digit.png: {unnamed}"
