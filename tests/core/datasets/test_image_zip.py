"""load_image_zip: class folders of PNG/JPEG read as prediction reads images, and every refusal
of a hostile zip (escaping paths, links, bombs, special or misplaced entries)."""

from __future__ import annotations

import io
import stat
import struct
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from cnn_core.datasets import (
    images_to_array,
    load_image_zip,
    load_npz,
    open_image,
)
from tests.support.builders import npz_bytes, png_bytes, zip_bytes
from tests.support.datasets import BYTE, assert_refused


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


# ---------------------------------------------------------------------------------------------
# Image zip: success


def test_zip_of_grayscale_png_folders(rng):
    pixels = rng.integers(0, 256, (5, 9, 7), dtype=np.uint8)
    entries = {
        "digits/": b"",
        "digits/b/": b"",
        "digits/b/1.png": png_bytes(pixels[0]),
        "digits/b/0.png": png_bytes(pixels[1]),
        "digits/a/x.png": png_bytes(pixels[2]),
        "digits/c/y.PNG": png_bytes(pixels[3]),
        "digits/c/z.png": png_bytes(pixels[4]),
        "__MACOSX/digits/a/._x.png": b"\x00\x05\x16\x07junk",
        "digits/a/.DS_Store": b"junk",
    }
    ds = load_image_zip(zip_bytes(entries))
    assert ds.class_names == ["a", "b", "c"]
    assert ds.input_shape == (1, 9, 7)
    assert ds.y.tolist() == [0, 1, 1, 2, 2]  # sorted by class, then by entry name
    order = [2, 1, 0, 3, 4]
    np.testing.assert_array_equal(ds.X[:, 0], pixels[order].astype(np.float32) * BYTE)
    assert (
        ds.preprocessing.items()
        >= {
            "scale": 1 / 255,
            "image_scale": 1 / 255,
            "source_dtype": "uint8",
            "source_format": "image_zip",
            "polarity": "mixed",  # random pixels: no background to match
        }.items()
    )


def test_zip_of_rgb_jpeg_folders_matches_prediction_path(rng):
    files = {
        f"{cls}/{i}.jpg": png_bytes(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), fmt="JPEG")
        for cls in ("cat", "dog")
        for i in range(3)
    }
    ds = load_image_zip(zip_bytes(files, zipfile.ZIP_STORED))
    assert ds.input_shape == (3, 10, 12) and ds.class_counts() == [3, 3]
    assert ds.X.min() >= 0.0 and ds.X.max() <= 1.0
    again = images_to_array(
        [open_image(b) for b in files.values()], ds.input_shape, ds.preprocessing
    )
    np.testing.assert_array_equal(ds.X, again)


def test_zip_mixed_sizes_and_modes_take_common_shape(rng):
    gray = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    color = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    files = {
        "a/0.png": png_bytes(gray[0]),
        "a/1.png": png_bytes(gray[1]),
        "b/0.png": png_bytes(gray[2]),
        "b/1.png": png_bytes(color),
    }
    ds = load_image_zip(zip_bytes(files))
    assert ds.input_shape == (3, 8, 8)  # one colour image makes all RGB; 8x8 is most common
    # Prediction keeps the aspect ratio: 16x20 fits as 6x8, padded with the training background
    odd = images_to_array([Image.fromarray(color)], (3, 8, 8), ds.preprocessing)[0]
    fill = np.rint(ds.preprocessing["background"]).astype(np.float32) * np.float32(BYTE)
    np.testing.assert_array_equal(odd[:, [0, 7]], np.broadcast_to(fill[:, None, None], (3, 2, 8)))
    np.testing.assert_array_equal(ds.X[0, 1], gray[0].astype(np.float32) * BYTE)


def test_zip_of_png_digits_equals_the_npz_digits(holdout):
    X, y = holdout
    picked = np.concatenate([np.flatnonzero(y == d)[:4] for d in range(10)])  # sorted by class
    files = {f"{y[i]}/{i:03d}.png": png_bytes(X[i]) for i in picked}
    ds = load_image_zip(zip_bytes(files))
    expected = load_npz(npz_bytes(X=X[picked], y=y[picked]))
    assert ds.class_names == expected.class_names
    np.testing.assert_array_equal(ds.X, expected.X)
    np.testing.assert_array_equal(ds.y, expected.y)


# ---------------------------------------------------------------------------------------------
# Image zip: refusals


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../x.png", "outside the archive"),
        ("a/../../x.png", "outside the archive"),
        ("/etc/x.png", "absolute path"),
        ("C:/x.png", "absolute path"),
        ("a\\..\\..\\x.png", "backslashes"),
    ],
)
def test_zip_entries_escaping_their_folder_are_refused(png, name, match):
    data = zip_bytes({"a/0.png": png, "b/0.png": png, name: png})
    assert_refused(match, load_image_zip, data)


def test_zip_symlink_entry_is_refused(png):
    data = zip_bytes({"a/0.png": png, "b/0.png": png, symlink_info("b/1.png"): "/etc/passwd"})
    assert_refused("symbolic link", load_image_zip, data)


def test_zip_with_too_many_entries_is_refused(png):
    files = {f"{c}/{i}.png": png for c in "ab" for i in range(3)}
    assert load_image_zip(zip_bytes(files), max_entries=6).n_samples == 6
    assert_refused(
        "7 entries, over the limit of 6",
        load_image_zip,
        zip_bytes({**files, "a/9.png": png}),
        max_entries=6,
    )


def test_zip_high_compression_ratio_bomb_is_refused(png):
    data = zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.png": b"\x00" * 2**22})
    start = time.perf_counter()
    assert_refused("expands more than 200 times", load_image_zip, data)
    assert time.perf_counter() - start < 1.0


def test_zip_entry_lying_about_its_size_is_refused(png):
    buf = io.BytesIO(zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.png": b"\x00" * 2**20}))
    with zipfile.ZipFile(buf) as zf:
        lying = zf.getinfo("b/1.png").file_size
    raw = buf.getvalue().replace(struct.pack("<I", lying), struct.pack("<I", 10))
    assert_refused("Bad CRC|expands more than", load_image_zip, raw)


def test_zip_total_decompressed_bytes_are_capped(rng):
    files = {
        f"{c}/{i}.png": png_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8))
        for c in "ab"
        for i in range(4)
    }
    assert_refused(
        "decompress to more than", load_image_zip, zip_bytes(files), max_total_bytes=4000
    )


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("b/readme.txt", b"hello", "not a PNG or JPEG image"),
        ("b/inner.zip", None, "nested archives"),
        ("b/inner.png", None, "archive, not an image"),
        ("b/fake.png", "bmp", "not a PNG or JPEG image"),
        ("b/cut.png", "cut", "could not be decoded"),
        ("top.png", "png", "not inside a class folder"),
        ("b/deep/x.png", "png", "nested too deep"),
    ],
)
def test_zip_non_image_or_misplaced_entries_are_refused(png, name, data, match):
    if data is None:
        data = zip_bytes({"x/0.png": png})
    elif data == "bmp":
        buf = io.BytesIO()
        Image.new("L", (4, 4)).save(buf, format="BMP")
        data = buf.getvalue()
    elif data == "cut":
        data = png_bytes(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))[:-40]
    elif data == "png":
        data = png
    assert_refused(match, load_image_zip, zip_bytes({"a/0.png": png, "b/0.png": png, name: data}))


def test_zip_special_entries_are_refused(png):
    fifo = zipfile.ZipInfo("b/1.png")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    assert_refused(
        "special file", load_image_zip, zip_bytes({"a/0.png": png, "b/0.png": png, fifo: png})
    )
    raw = zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.png": png})
    entry = raw.rindex(b"PK\x01\x02")  # the last central directory record: b/1.png
    flags = struct.unpack_from("<H", raw, entry + 8)[0] | 0x1  # the "encrypted" bit
    locked = raw[: entry + 8] + struct.pack("<H", flags) + raw[entry + 10 :]
    assert_refused("encrypted", load_image_zip, locked)
    raw = zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.pngXAAA": png})
    assert_refused("NUL byte", load_image_zip, raw.replace(b"XAAA", b"\x00AAA"))


def test_zip_palette_images_count_as_gray_only_with_a_gray_palette(rng):
    gray = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).quantize(4)
    color = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).quantize(4)

    def png_of(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    assert gray.mode == color.mode == "P"
    files = {"a/0.png": png_of(gray), "b/0.png": png_of(gray)}
    assert load_image_zip(zip_bytes(files)).input_shape == (1, 6, 6)
    files["b/1.png"] = png_of(color)
    assert load_image_zip(zip_bytes(files)).input_shape == (3, 6, 6)


def test_zip_output_size_is_capped_as_uint8(png):
    data = zip_bytes({"a/0.png": png, "b/0.png": png})  # two 4x4 grayscale images
    assert load_image_zip(data, max_bytes=32).pixels.dtype == np.uint8
    assert_refused("would take 32 bytes as uint8", load_image_zip, data, max_bytes=31)


def test_zip_of_a_single_class_or_no_images_is_refused(png):
    assert_refused(
        "single class folder 'a'", load_image_zip, zip_bytes({"a/0.png": png, "a/1.png": png})
    )
    assert_refused("no images", load_image_zip, zip_bytes({"a/": b"", "__MACOSX/x": b""}))
